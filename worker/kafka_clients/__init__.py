"""How this process connects to Kafka: the one package that turns the connection settings
(bootstrap address, TLS, SASL) into every Kafka client's arguments.

The worker's stream (`worker/engine/`) speaks aiokafka; the operator tools speak
kafka-python through the factories of `sync_clients`. Both libraries take the same
security arguments (`security_protocol`, `ssl_context`, `sasl_mechanism`,
`sasl_plain_username`, `sasl_plain_password`), so `client_args` serves both. An
import-linter contract keeps every other module away from both libraries.

Secrets (a SASL password, a key's password) are files, read when a client is built (a
rotated secret is picked up by the next client), registered for masking
(`worker.logs.mask`) and never put in a message: an error names the file, its mode and
owner, never what it holds.

- `errors`         — what goes wrong: a setting that cannot work, a refusal, no answer;
- `connection`     — a bootstrap address with its security, and that security's consistency;
- `secret_files`   — reading a secret file, with an error that never shows its content;
- `command_config` — `--command-config FILE`: a client properties file as Kafka's tools take it;
- `client_args`    — the arguments every client takes alike: address, TLS context, SASL;
- `probe`          — the connection check and the broker's facts (aiokafka, for the worker);
- `sync_clients`   — the operator tools' clients (kafka-python: short synchronous commands).
"""
