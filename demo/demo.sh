#!/bin/bash
# ipsecgw demo (`make demo`, as root on Debian 12): two ipsecgw gateways and a strongSwan site, in network
# namespaces on this machine.
#
#   demo-hA 10.1.0.2 -- demo-gA -- WAN bridge 192.0.2.0/24 -- demo-gB -- demo-hB 10.2.0.2
#                                      |
#                                   demo-C: strongSwan (charon-systemd, kernel-libipsec), 10.3.0.1 on lo
#
# gw A and gw B run `ipsecgw run` with examples/demo-gw-a.yaml and demo-gw-b.yaml; site C connects to gw A.
# Shown: the ACQUIRE raised by host A's first ping, pings and a 5 s iperf3 to host B and to site C,
# `ipsecgw list-sas` on gw A with its counters.  Everything is torn down at the end, on Ctrl-C and on failure.
#
# Environment: IPSECGW (the command, default .venv/bin/ipsecgw), IPERF_TIME (seconds, default 5),
# DEMO_KEEP=1 (leave the logs in the work directory).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IPSECGW=${IPSECGW:-$ROOT/.venv/bin/ipsecgw}
IPERF_TIME=${IPERF_TIME:-5}
WORK=$(mktemp -d /tmp/ipsecgw-demo.XXXXXX)
NS="demo-hA demo-gA demo-gB demo-hB demo-C demo-wan"
CHARON=/usr/sbin/charon-systemd
PSK_C="demo-only secret for site C: never use this one"
T0=$(date +%s)
GW_PIDS=()
CHARON_PID=""
IPERF_PIDS=()

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
info() { printf '   %s\n' "$*"; }
FAILED=""        # the first leg that failed: the verdict line names it
RESULTS=()       # one line per leg that worked, repeated in the verdict
die()  { FAILED=$*; printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
gw()   { local side=$1; shift; "$IPSECGW" "$@" --socket "/run/ipsecgw/demo-$side.sock"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    say "teardown"
    for p in "${IPERF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    # the gateways stop in order: control (Deletes to the peers, keys zeroed), fastpath, TUN
    for p in "${GW_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${GW_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ ${#GW_PIDS[@]} -gt 0 ] && info "gateways stopped (SAs deleted, keys zeroed, TUN devices removed)"
    if [ -n "$CHARON_PID" ]; then
        kill -TERM "$CHARON_PID" 2>/dev/null || true
        wait "$CHARON_PID" 2>/dev/null || true
        info "strongSwan stopped"
    fi
    for ns in $NS; do ip netns del "$ns" 2>/dev/null || true; done
    rm -f /dev/shm/ipsecgw-demo-a.shm /dev/shm/ipsecgw-demo-b.shm
    info "namespaces removed"
    if [ "$rc" -ne 0 ]; then
        for f in "$WORK"/gwA.log "$WORK"/gwB.log "$WORK"/charon.log; do
            [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 25 "$f"; }
        done
    fi
    if [ "${DEMO_KEEP:-0}" = 1 ]; then info "logs kept in $WORK"; else rm -rf "$WORK"; fi
    # The last line is the verdict, for a person and for CI alike; the exit status says the same.
    local took=$(( $(date +%s) - T0 ))
    if [ "$rc" -eq 0 ]; then
        say "demo finished in $took s"
        for r in "${RESULTS[@]}"; do info "$r"; done
        echo "demo: PASSED in $took s: $(IFS=';'; echo "${RESULTS[*]}" | sed 's/;/; /g')"
    else
        [ -n "$FAILED" ] || FAILED="a step exited with status $rc (see the output above)"
        echo "demo: FAILED after $took s: $FAILED" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; FAILED=interrupted; exit 130' INT TERM
# a command that fails outside die() still names itself in the verdict
trap '[ -n "$FAILED" ] || FAILED="line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || die "run as root (network namespaces, TUN devices)"
[ -x "$IPSECGW" ] || die "$IPSECGW missing: run 'make demo' (it builds the virtualenv first)"

# ------------------------------------------------------------------ what the demo needs (make deps installs it)
missing=()
for t in ping iperf3 swanctl ip; do command -v "$t" >/dev/null || missing+=("$t"); done
[ -x "$CHARON" ] || missing+=("$CHARON")
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run 'make demo' (its deps step installs the apt packages)"

# ------------------------------------------------------------------ topology
say "1. namespaces: host A - gw A === gw B - host B, and strongSwan site C on the same WAN"
for ns in $NS; do ip netns del "$ns" 2>/dev/null || true; done
for ns in $NS; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
link() {   # link NS_A DEV_A ADDR_A NS_B DEV_B ADDR_B (ADDR may be "-")
    ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
    [ "$3" = - ] || ip -n "$1" addr add "$3" dev "$2"
    [ "$6" = - ] || ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}
ip -n demo-wan link add wan type bridge
ip -n demo-wan link set wan up
link demo-hA lan 10.1.0.2/24  demo-gA lan 10.1.0.1/24
link demo-gA wan 192.0.2.1/24 demo-wan pa -
link demo-gB wan 192.0.2.2/24 demo-wan pb -
link demo-C  wan 192.0.2.3/24 demo-wan pc -
link demo-gB lan 10.2.0.1/24  demo-hB lan 10.2.0.2/24
for p in pa pb pc; do ip -n demo-wan link set "$p" master wan; done
ip -n demo-hA route add default via 10.1.0.1
ip -n demo-hB route add default via 10.2.0.1
ip -n demo-C addr add 10.3.0.1/32 dev lo          # site C's protected host: an address on lo
for g in demo-gA demo-gB; do
    in_ns "$g" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
in_ns demo-gA ping -c1 -W2 192.0.2.2 >/dev/null && in_ns demo-gA ping -c1 -W2 192.0.2.3 >/dev/null \
    || die "the WAN bridge does not pass traffic"
info "host A 10.1.0.2, gw A 192.0.2.1, gw B 192.0.2.2, host B 10.2.0.2, site C 192.0.2.3 (host 10.3.0.1)"

# ------------------------------------------------------------------ gateways
say "2. ipsecgw run on gw A and gw B (examples/demo-gw-a.yaml, demo-gw-b.yaml)"
for side in A B; do
    lower=$(echo $side | tr AB ab)
    rm -f "/dev/shm/ipsecgw-demo-$lower.shm"
    # started directly (not through a shell function), so that $! is `ipsecgw run` itself: ip netns exec
    # execs in place, and the teardown's SIGTERM must reach the supervisor
    ip netns exec "demo-g$side" "$IPSECGW" run -c "$ROOT/examples/demo-gw-$lower.yaml" --log-file "$WORK/gw$side.log" \
        </dev/null >/dev/null 2>&1 &
    GW_PIDS+=($!)
done
for side in A B; do
    lower=$(echo $side | tr AB ab)
    for _ in $(seq 150); do
        grep -q "fastpath up" "$WORK/gw$side.log" 2>/dev/null && gw "$lower" status >/dev/null 2>&1 && break
        sleep 0.1
    done
    grep -q "fastpath up" "$WORK/gw$side.log" 2>/dev/null || die "gw $side did not start"
    info "gw $side: $(grep -o 'fastpath up: .*' "$WORK/gw$side.log" | head -1 | cut -c1-110)"
done
gw a status | sed 's/^/   | /'

# ------------------------------------------------------------------ strongSwan site C
say "3. site C: strongSwan (charon-systemd + kernel-libipsec) connects to gw A"
for d in x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12; do mkdir -p "$WORK/C/swanctl/$d"; done
cat > "$WORK/C/strongswan.conf" <<EOF
charon {
    load_modular = no
    # kernel-libipsec before kernel-netlink: ESP in charon's userspace (this kernel has no ESP),
    # UDP-encapsulated on 4500
    load = random nonce openssl aes sha1 sha2 hmac kdf gcm curve25519 pem pkcs1 pkcs8 x509 pubkey kernel-libipsec kernel-netlink socket-default vici updown
    install_routes = yes
    install_virtual_ip = no
    filelog {
        main {
            path = $WORK/charon.log
            time_format = %T
            default = 1
            flush_line = yes
        }
    }
    plugins {
        vici {
            socket = unix://$WORK/C/charon.vici
        }
    }
}
EOF
cat > "$WORK/C/swanctl/swanctl.conf" <<EOF
connections {
    gw-a {
        version = 2
        local_addrs = 192.0.2.3
        remote_addrs = 192.0.2.1
        proposals = aes128gcm16-prfsha256-ecp256
        encap = yes
        mobike = no
        local { auth = psk
                id = site-c.demo }
        remote { auth = psk
                 id = gw-a.demo }
        children {
            net-c {
                local_ts = 10.3.0.0/16
                remote_ts = 10.1.0.0/16
                esp_proposals = aes256gcm16
                mode = tunnel
            }
        }
    }
}
secrets {
    ike-a {
        id-a = site-c.demo
        id-b = gw-a.demo
        secret = "$PSK_C"
    }
}
EOF
ip netns exec demo-C env STRONGSWAN_CONF="$WORK/C/strongswan.conf" "$CHARON" </dev/null >"$WORK/charon.out" 2>&1 &
CHARON_PID=$!
for _ in $(seq 50); do [ -S "$WORK/C/charon.vici" ] && break; sleep 0.1; done
[ -S "$WORK/C/charon.vici" ] || die "charon did not start"
swan() { in_ns demo-C swanctl "$@" --uri "unix://$WORK/C/charon.vici"; }
swan --load-all --file "$WORK/C/swanctl/swanctl.conf" >/dev/null
swan --initiate --child net-c --timeout 20 >"$WORK/initiate.log" 2>&1 || { cat "$WORK/initiate.log"; die "site C could not connect"; }
info "$(swan --list-sas | grep -E 'ESTABLISHED|INSTALLED' | sed 's/^ *//' | paste -sd ';' | cut -c1-150)"
grep "CHILD SA net-c" "$WORK/gwA.log" | sed 's/^.*ipsecgw.daemon: /   gw A: /' | head -1

# ------------------------------------------------------------------ traffic-triggered negotiation
say "4. host A pings host B: no SA yet, so the first packet raises an ACQUIRE on gw A"
in_ns demo-hA ping -c 1 -W 5 10.2.0.2 | sed -n 2p | sed 's/^/   /'
for _ in $(seq 30); do grep -q "ACQUIRE for" "$WORK/gwA.log" && break; sleep 0.1; done
grep "ACQUIRE for" "$WORK/gwA.log" | head -1 | sed 's/^.*ipsecgw.daemon: /   gw A log: /' \
    || die "no ACQUIRE in gw A's log"
grep -E "IKE SA site-b.* established|CHILD SA net\{" "$WORK/gwA.log" | head -2 | sed 's/^.*ipsecgw.daemon: /   gw A log: /'

# ------------------------------------------------------------------ pings
say "5. pings through the tunnels"
for dst in 10.2.0.2 10.3.0.1; do
    out=$(in_ns demo-hA ping -c 5 -i 0.2 -W 2 "$dst") || { echo "$out"; die "ping $dst failed"; }
    loss=$(echo "$out" | grep -o '[0-9]* packets transmitted, [0-9]* received, [0-9.]*% packet loss')
    [ -n "$loss" ] && echo "$loss" | grep -q ' 0% packet loss' || { echo "$out"; die "ping $dst lost packets"; }
    info "host A -> $dst: $loss, $(echo "$out" | grep -o 'rtt.*' | cut -d' ' -f4 | cut -d/ -f2) ms average"
done

# ------------------------------------------------------------------ iperf3
say "6. iperf3 TCP, ${IPERF_TIME} s each, from host A"
ip netns exec demo-hB iperf3 -s -B 10.2.0.2 >/dev/null 2>&1 & IPERF_PIDS+=($!)
ip netns exec demo-C  iperf3 -s -B 10.3.0.1 >/dev/null 2>&1 & IPERF_PIDS+=($!)
sleep 0.5
for pair in "10.2.0.2:host B (ipsecgw pair, ESP)" "10.3.0.1:site C (strongSwan, ESP in UDP)"; do
    dst=${pair%%:*}; what=${pair#*:}
    out=$(in_ns demo-hA iperf3 -c "$dst" -t "$IPERF_TIME" -f m) || { echo "$out"; die "iperf3 to $dst failed"; }
    rate=$(echo "$out" | grep receiver | awk '{for (i=1;i<=NF;i++) if ($i=="Mbits/sec") print $(i-1)}')
    [ -n "$rate" ] || { echo "$out"; die "iperf3 to $dst printed no receiver rate"; }
    info "iperf3 host A -> $what: $rate Mbit/s"
    RESULTS+=("${what%% (*} $rate Mbit/s")
done

# ------------------------------------------------------------------ list-sas
say "7. ipsecgw list-sas on gw A (counters from the fastpath)"
gw a list-sas | sed 's/^/   | /'
say "8. ipsecgw list-policies on gw A"
gw a list-policies | sed 's/^/   | /'
