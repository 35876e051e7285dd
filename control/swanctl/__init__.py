"""``ipsecgw import-swanctl``: strongSwan's swanctl.conf read (parse.py) and converted (convert.py,
secrets.py) into ipsecgw's YAML configuration (emit.py)."""
