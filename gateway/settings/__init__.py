"""The settings leaf: every config section's dataclass and validation, importable without any stage.

errors: `ConfigError`; durations: "90s", "15m"; network: loopback checks; fields: checks shared by
the sections (unknown keys, numbers, webhook URLs, paths). One module per section: auth (`auth:`
static tokens and `admin:` tokens), limits, policy, tokens, identity, monitoring, approvals,
discovery. `gateway.config` reads the file and the environment and assembles them into `Settings`.
Nothing here imports a stage package; the stages import from here.
"""
