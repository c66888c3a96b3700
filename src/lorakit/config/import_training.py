"""sd-scripts' training keys → lorakit values, read as sd-scripts reads them: learning rates, warm-up, optimizer and
its arguments, scheduler, resolution and buckets, token length, alpha masks, sample prompts and their schedule, and
the model family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .import_result import ImportResult, args_list, cast, has_field, literal_values, number


def resolution(r: ImportResult, key: str, value: Any) -> None:
    """'512,512' / '512' / 512 / [512, 512] → data.resolution; '768,512' → data.image_size (the largest bucket)."""
    parts = value if isinstance(value, list) else str(value).replace("x", ",").split(",")
    try:
        sides = [cast(s, int) for s in parts if str(s).strip()]
    except (TypeError, ValueError):
        r.bad(key, value, "a resolution is a number of pixels or width,height")
        return
    if not sides:
        r.skip(key, value, "empty resolution")
        return
    if not _buckets_on(r) and any(side % 8 for side in sides):
        rounded = [side - side % 8 for side in sides]
        r.unsupported(key, value, f"without buckets sd-scripts trains every image at exactly this size; lorakit "
                      f"needs multiples of 8 and uses {','.join(map(str, rounded))}")
        sides = rounded
    _put_resolution(r, key, value, sides)
    if any(k == key for k, _, _ in r.unmapped):
        r.mapped.pop(key, None)  # listed once, as unsupported


def _buckets_on(r: ImportResult) -> bool:
    """Whether sd-scripts buckets: the dataset TOML's enable_bucket if it set one, else the training config's."""
    return bool(r.values.get("data", {}).get("enable_bucket", r.source.get("enable_bucket")))


def _put_resolution(r: ImportResult, key: str, value: Any, sides: list[int]) -> None:
    """data.resolution for a square, data.image_size (the largest bucket) for width,height."""
    if len(set(sides)) > 1 and len(sides) == 2 and has_field("data.image_size"):
        r.put(key, "data.image_size", sides)  # the largest bucket, (width, height)
    elif len(set(sides)) > 1:
        r.notes.append(f"{key} {value!r} is not square: lorakit trains at {max(sides)} with aspect buckets")
        r.put(key, "data.resolution", max(sides))
    else:
        r.put(key, "data.resolution", sides[0])


def bucket_steps(r: ImportResult, key: str, value: Any) -> None:
    """bucket_reso_steps counts only with buckets on; there sd-scripts stops at launch unless it divides 64 (32 for
    SDXL: train_network.py / sdxl_train_network.py assert_extra_args → verify_bucket_reso_steps)."""
    n = number(value)
    need = 32 if r.values.get("model", {}).get("family") == "sdxl" else 64
    if not _buckets_on(r):
        r.inert(key, value, "buckets are off (enable_bucket)")
    elif n is None or not n.is_integer() or n <= 0 or n % need:
        r.unsupported(key, value, f"sd-scripts stops at launch: with buckets it must be divisible by {need}; "
                      "lorakit keeps its default 64")
    else:
        r.put(key, "data.bucket_reso_steps", int(n))


def choice(r: ImportResult, key: str, value: Any, dotted: str, table: dict[str, str] | None = None) -> None:
    """Map a named choice (optionally renamed through `table`) if lorakit offers it."""
    name = table.get(str(value), str(value)) if table else str(value)
    options = literal_values(dotted)
    if name in options:
        r.put(key, dotted, name)
    else:
        r.skip(key, value, f"lorakit's {dotted} offers {', '.join(map(str, options))}")


def learning_rates(r: ImportResult, src: dict[str, Any]) -> None:
    """learning_rate / unet_lr / text_encoder_lr and whether the text encoder trains, as sd-scripts reads them.

    sd-scripts (train_network.py): the UNet trains at unet_lr when set, else learning_rate (default 2e-6); the
    text encoders at text_encoder_lr (one value, or one per encoder) when set, else learning_rate; a
    text_encoder_lr of 0 or network_train_unet_only leaves them untrained.
    """
    keys = ("learning_rate", "unet_lr")
    bad = _unreadable_numbers(r, src, keys, "train.learning_rate")
    lr, unet_lr = (None if k in bad else number(src.get(k)) for k in keys)
    if unet_lr:
        r.put("unet_lr", "train.learning_rate", unet_lr)
        if "learning_rate" in src:
            r.mapped["learning_rate"] = "train.learning_rate (unet_lr wins for the UNet)"
    elif unet_lr == 0 and "unet_lr" in src:
        r.unsupported("unet_lr", src["unet_lr"], "0 leaves the UNet untrained; lorakit always trains it")
    if not unet_lr and lr is not None:
        r.put("learning_rate", "train.learning_rate", lr)
    elif not unet_lr and "learning_rate" not in bad:
        r.values.setdefault("train", {})["learning_rate"] = 2e-6
        r.defaults.append("learning_rate = 2e-06")
    train_te = True
    if src.get("network_train_unet_only") not in ("", None):
        try:
            train_te = not cast(src["network_train_unet_only"], bool)
            r.mapped["network_train_unet_only"] = f"network.train_text_encoder = {train_te}"
        except ValueError:
            r.bad("network_train_unet_only", src["network_train_unet_only"], "takes true or false")
    te = src.get("text_encoder_lr")
    te_values = te if isinstance(te, list) else [te] if te not in ("", None) else []
    numbers = [number(v) for v in te_values]
    if None in numbers or any(isinstance(v, bool) for v in te_values):
        r.bad("text_encoder_lr", te, "train.text_encoder_lr takes a number")
    elif numbers and all(n == 0 for n in numbers):
        train_te = False
        r.mapped["text_encoder_lr"] = "network.train_text_encoder = False (0: the text encoder is not trained)"
    elif numbers and len(set(numbers)) > 1:
        r.unsupported("text_encoder_lr", te, "one learning rate per text encoder; lorakit has one for both")
    elif numbers and train_te:
        r.put("text_encoder_lr", "train.text_encoder_lr", numbers[0])
    elif numbers:
        r.inert("text_encoder_lr", te, "the text encoder is not trained (network_train_unet_only)")
    r.values.setdefault("network", {})["train_text_encoder"] = train_te


def _unreadable_numbers(r: ImportResult, src: dict[str, Any], keys: tuple[str, ...], dotted: str) -> set[str]:
    """The keys among `keys` whose value is set but not a number, listed as unmapped."""
    bad = {k for k in keys if src.get(k) not in ("", None) and (number(src[k]) is None or isinstance(src[k], bool))}
    for key in sorted(bad):
        r.bad(key, src[key], f"{dotted} takes a number")
    return bad


def warmup(r: ImportResult, src: dict[str, Any]) -> None:
    """lr_warmup_steps as sd-scripts reads it: an int is steps, a float a fraction of the steps
    (get_scheduler_fix); on the command line (int_or_float) 'N%' is a percentage and a number ≥ 1 an int."""
    key, raw = "lr_warmup_steps", src.get("lr_warmup_steps")
    if isinstance(raw, str) and raw.strip().endswith("%") and number(raw.strip()[:-1]) is not None:
        raw = float(raw.strip()[:-1]) / 100
    if raw in ("", None) or key in _unreadable_numbers(r, {key: raw}, (key,), "the warm-up"):
        if key in src and raw in ("", None):
            r.skip(key, None, "")
        return
    if isinstance(raw, str):
        raw = float(raw) if float(raw) < 1 else int(float(raw))
    if isinstance(raw, float) and raw >= 1:
        r.unsupported(key, raw, f"sd-scripts reads a float as a fraction of the steps: a warm-up of {raw} × the "
                      "run; lorakit's train.lr_warmup_ratio is below 1 (set train.lr_warmup_steps)")
    elif isinstance(raw, float) and raw > 0:
        r.put(key, "train.lr_warmup_ratio", raw)
    elif raw:
        r.put(key, "train.lr_warmup_steps", int(raw))
    else:
        r.skip(key, None, "")


def family(r: ImportResult, src: dict[str, Any]) -> None:
    """sdxl / v2 checkboxes → model.family (both off: left to auto-detection)."""
    if src.get("sdxl"):
        r.put("sdxl", "model.family", "sdxl")
    elif src.get("v2"):
        r.put("v2", "model.family", "sd2")
    for key in ("sdxl", "v2"):
        if key in src and key not in r.mapped:
            r.mapped[key] = "model.family (auto)"


PROMPT_FORMAT = "lorakit reads kohya's .txt prompt format; convert it to one prompt per line"
NO_SCHEDULE = "kohya renders no samples without sample_every_n_steps/epochs"


def gui_sample_prompts(r: ImportResult, key: str, value: Any) -> None:
    """kohya_ss GUI: `sample_prompts` is the prompt text itself (the GUI writes it to a file for sd-scripts), one
    prompt per line; blank lines and '#' lines are skipped, as sd-scripts reads that file."""
    if not isinstance(value, str):
        r.bad(key, value, "sample.prompts takes the prompt text, one prompt per line")
        return
    prompts = [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]
    if prompts:
        r.put(key, "sample.prompts", prompts)
    else:
        r.skip(key, None, "")


def sample_prompts_file(r: ImportResult, key: str, value: Any) -> None:
    """sd-scripts: `sample_prompts` is a path; lorakit reads the .txt format (sd-scripts also reads .toml/.json)."""
    suffix = Path(str(value)).suffix.lower()
    if suffix == ".txt":
        r.put(key, "sample.prompts_file", value)
    elif suffix in (".toml", ".json"):
        r.skip(key, value, PROMPT_FORMAT)
    else:
        r.skip(key, value, "sd-scripts reads a .txt, .toml or .json prompt file; " + PROMPT_FORMAT)


def sample_schedule(r: ImportResult, src: dict[str, Any]) -> None:
    """kohya's sampling rules, applied once every key is read (their order in the file is arbitrary).

    sd-scripts renders at step 0 only with sample_at_first, then every sample_every_n_epochs epochs, else every
    sample_every_n_steps steps (the steps are ignored when the epochs are set); with neither, nothing after step 0.
    lorakit renders its prompts at step 0, on the schedule and at the end.
    """
    sample = r.values.get("sample", {})
    if not any(dotted in ("sample.prompts", "sample.prompts_file") for dotted in r.mapped.values()):
        for name in ("every_n_steps", "every_n_epochs"):
            if sample.pop(name, None) is not None:
                key = f"sample_{name}"
                r.mapped.pop(key, None)
                r.inert(key, src[key], "no sample prompts lorakit reads, so it renders none (samples never "
                        "change training)")
    if sample.get("every_n_epochs") and sample.pop("every_n_steps", None) is not None:
        r.mapped.pop("sample_every_n_steps", None)
        r.unmapped.append(("sample_every_n_steps", src["sample_every_n_steps"],
                           "kohya ignores sample_every_n_steps when sample_every_n_epochs is set"))
    at_first, unreadable = False, False
    if src.get("sample_at_first") not in ("", None):
        try:
            at_first = cast(src["sample_at_first"], bool)
        except ValueError:
            r.bad("sample_at_first", src["sample_at_first"], "takes true or false")
            unreadable = True
    prompts = [k for k, dotted in r.mapped.items() if dotted in ("sample.prompts", "sample.prompts_file")]
    if prompts and not (sample.get("every_n_epochs") or sample.get("every_n_steps")):
        if at_first:
            r.notes.append("kohya renders the sample prompts only at step 0 (sample_at_first without "
                           "sample_every_n_steps/epochs); lorakit renders them at the end too")
        else:
            for key in prompts:
                sample.pop(r.mapped.pop(key).split(".", 1)[1], None)
                r.unmapped.append((key, src[key], NO_SCHEDULE + " (lorakit would render them at step 0 and the "
                                   "end)"))
            prompts = []
    if "sample" in r.values and not sample:
        del r.values["sample"]
    if not unreadable and (prompts and not at_first or "sample_at_first" in src):
        if at_first or not prompts:
            r.skip("sample_at_first", None, "")  # lorakit renders step 0 as well; or no samples at all
        else:  # samples never change what is trained
            r.inert("sample_at_first", src.get("sample_at_first", False), "kohya renders no samples at step 0; "
                    "lorakit always does (a sample never changes training)")


def optimizer(r: ImportResult, src: dict[str, Any]) -> None:
    """optimizer_type (any case; use_8bit_adam / use_lion_optimizer; empty = AdamW) and optimizer_args, as
    sd-scripts' get_optimizer reads them; Adafactor's defaults written out (sd-scripts: relative_step=True, then
    its own 'adafactor' schedule; transformers: scale_parameter=True, warmup_init=False)."""
    name = str(src.get("optimizer_type") or "")
    label = "optimizer_type"
    for flag, implied in (("use_8bit_adam", "AdamW8bit"), ("use_lion_optimizer", "Lion")):
        if src.get(flag) not in ("", None, False):
            name, label = name or implied, flag
            r.mapped[flag] = f"train.optimizer_type = {implied!r}"
    options = {o.lower(): o for o in literal_values("train.optimizer_type")}
    chosen = {"dadaptadampreprint": "DAdaptation"}.get(name.lower(), options.get((name or "AdamW").lower()))
    if chosen is None:
        r.unsupported(label, name, f"lorakit's train.optimizer_type offers {', '.join(options.values())}")
        chosen = None
    elif name:
        r.put(label, "train.optimizer_type", chosen)
    args = args_list(src.get("optimizer_args"))
    if chosen == "Adafactor":
        flags = {a.partition("=")[0].strip(): a.partition("=")[2].strip().lower() for a in args}
        if flags.get("warmup_init") == "true" and flags.get("relative_step") == "false":
            args = [a for a in args if a.partition("=")[0].strip() != "relative_step"] + ["relative_step=True"]
            r.notes.append("Adafactor warmup_init=True needs relative_step: sd-scripts turns it on, and so does the "
                           "import")
        given = {a.partition("=")[0].strip() for a in args}
        added = [f"{k}={v}" for k, v in (("relative_step", "True"), ("scale_parameter", "True"),
                                         ("warmup_init", "False")) if k not in given]
        if added:
            r.notes.append(f"Adafactor: sd-scripts/transformers defaults written out: {' '.join(added)}")
        args += added
        relative = any(a.replace(" ", "").lower() == "relative_step=true" for a in args)
        if relative:
            r.values.setdefault("train", {})["lr_scheduler"] = "adafactor"
            r.notes.append("Adafactor with relative_step: sd-scripts replaces the schedule with Adafactor's own "
                           "(lr_scheduler = 'adafactor'; learning_rate is its initial value)")
    if chosen is not None:
        args = _known_arguments(r, chosen, args)
    if args:
        r.put("optimizer_args", "train.optimizer_args", args)
    elif "optimizer_args" in src:
        r.empty.append("optimizer_args")


def _known_arguments(r: ImportResult, optimizer: str, args: list[str]) -> list[str]:
    """The optimizer_args the optimizer's class takes; sd-scripts passes the others on and stops with a TypeError,
    so each is listed as unsupported and left out."""
    from .optimizer_rules import optimizer_parameters

    known = optimizer_parameters(optimizer)
    if known is None or any(p == "kwargs" for p in known):
        return args
    kept = []
    for item in args:
        name = item.partition("=")[0].strip()
        if name in known:
            kept.append(item)
        else:
            r.unsupported("optimizer_args", item, f"{optimizer} takes no '{name}': sd-scripts would stop with a "
                          "TypeError; left out")
    return kept


def alpha_mask(r: ImportResult, key: str, value: Any) -> None:
    """alpha_mask: sd-scripts weights the loss by the alpha channel whenever the batch has alpha masks, with or
    without masked_loss (train_network.py process_batch); lorakit needs both keys."""
    r.put(key, "data.alpha_mask", value)
    if r.values.get("data", {}).get("alpha_mask") is True:
        r.values.setdefault("train", {})["masked_loss"] = True
        r.notes.append("alpha_mask: sd-scripts masks the loss by the alpha channel even without masked_loss; "
                       "train.masked_loss = true does the same here")


def scheduler(r: ImportResult, key: str, value: Any) -> None:
    """lr_scheduler by sd-scripts' name; 'adafactor' comes from the Adafactor optimizer (see optimizer);
    schedules lorakit lacks are unsupported."""
    if r.values.get("train", {}).get("lr_scheduler") == "adafactor":
        r.mapped[key] = "train.lr_scheduler = 'adafactor' (Adafactor's relative step replaces it, as sd-scripts)"
    elif str(value).startswith("adafactor"):
        r.put(key, "train.lr_scheduler", "adafactor")
    elif str(value) in literal_values("train.lr_scheduler"):
        r.put(key, "train.lr_scheduler", str(value))
    else:
        offers = ", ".join(literal_values("train.lr_scheduler"))
        r.unsupported(key, value, f"lorakit's train.lr_scheduler offers {offers}"
                      " (or name any torch scheduler class with train.lr_scheduler_type)")


def token_length(r: ImportResult, key: str, value: Any) -> None:
    """max_token_length: 150 / 225 are kohya's long prompts; 75 (what the GUI writes by default) is sd-scripts'
    unset."""
    n = number(value)
    if n in (75, None) and value not in (True, False):
        r.skip(key, None, "")
    else:
        r.put(key, "train.max_token_length", int(n) if n is not None and n.is_integer() else value)


def known_scheduler_arguments(r: ImportResult) -> None:
    """lr_scheduler_args the schedule takes; sd-scripts passes the others on and stops with a TypeError, so each
    is listed as unsupported and left out (arguments lorakit sets itself are checked by config validate)."""
    import inspect

    from .optimizer_rules import scheduler_class, scheduler_parameters

    train = r.values.get("train", {})
    args = train.get("lr_scheduler_args")
    if not args:
        return
    if train.get("lr_scheduler_type"):
        cls, _ = scheduler_class(train["lr_scheduler_type"])
        params = dict(inspect.signature(cls).parameters) if cls is not None else None
        owner = train["lr_scheduler_type"]
    else:
        owner = train.get("lr_scheduler", "constant")
        params = scheduler_parameters(owner)
    if params is None or "kwargs" in params:
        return
    kept = [a for a in args if a.partition("=")[0].strip() in params]
    for item in args:
        if item not in kept:
            r.unsupported("lr_scheduler_args", item, f"{owner} takes no '{item.partition('=')[0].strip()}': "
                          "sd-scripts would stop with a TypeError; left out")
    if kept:
        train["lr_scheduler_args"] = kept
    else:
        train.pop("lr_scheduler_args")
        r.mapped.pop("lr_scheduler_args", None)


def needless_warmup(r: ImportResult) -> None:
    """sd-scripts' get_scheduler_fix stops at launch on a warm-up with 'constant', Adafactor's own schedule or a
    scheduler class (wrap_check_needless_num_warmup_steps); lorakit would quietly warm up: listed, left out."""
    train = r.values.get("train", {})
    schedule = train.get("lr_scheduler_type") or train.get("lr_scheduler", "constant")
    keys = [k for k in ("lr_warmup_steps", "lr_warmup_ratio") if train.get(k)]
    if not keys or schedule not in ("constant", "adafactor") and not train.get("lr_scheduler_type"):
        return
    for key in keys:
        value = train.pop(key)
        for source in [s for s, dotted in r.mapped.items() if dotted.startswith(f"train.{key}")]:
            r.mapped.pop(source)
            r.unsupported(source, value, f"sd-scripts stops at launch: {schedule} takes no warm-up; left out")
