"""Coverage-guided fuzzing (atheris) of the parsers that face the network and the operator: one module per
target (esp_inbound, ike_codec, ike_responder, config_loader), harness.py to run one, run.py to run them.
docs/fuzzing.md says what is fuzzed, how and where crashers go."""
