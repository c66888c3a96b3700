"""Configuration: one typed schema, TOML layers with provenance, migrations, validation, the plan, presets.

Public entry points (import them from their modules; this package imports nothing heavy on its own):

- `loader.resolve_layers(preset, files, adds, oom, sets, *, check_paths=False) -> ResolvedConfig`
- `loader.load_config(files, sets) -> LorakitConfig`
- `plan.build_plan(cfg) -> Plan`, `plan.render_plan(plan) -> list[str]`, `plan.compute_steps(...)`
- `snapshot.write_snapshot(run_dir, resolved)`
- `validate.check(cfg, paths=False) -> (errors, warnings)`, `optimizer_rules.parse_args_list(items)`
- `importers.import_file(path, dataset_toml=None) -> ImportResult`
- `simple.SimpleForm`, `simple.resolve_simple(form, sets)`
"""
