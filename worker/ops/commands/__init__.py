"""The operator commands, one module per command or group (`dlq`, `rejections`, `status`,
`whatif`, `preflight`, `reconcile`, `publish-registers` in `registers`): options and
printing only. What they share: `options.py` (broker, topics, times), `output.py` (exit
codes, cells, JSON lines), and the manual transfer `transfer.py` (`dlq replay`,
`rejections resend`). `worker/cli.py` registers them."""
