"""Tokenizers: bytes for seqedge's own byte-level models, a Hugging Face `tokenizer.json` for real ones.

    tok = load_tokenizer(folder)             # a checkpoint or artifact folder; ByteTokenizer when it has none
    ids = tok.encode("Hello")                # list[int], BOS added when the model's config says so
    text = tok.decode(ids)                   # str
    ids = tok.chat("What is 2+2?")           # the checkpoint's chat template, rendered in a sandbox
    tok.eos_ids                              # ids that end generation

The files travel with the model into every artifact (listed and hashed in its manifest):
`tokenizer.json`, `tokenizer_config.json` (BOS/EOS tokens, `add_bos_token`, chat template),
`generation_config.json` (EOS ids), `special_tokens_map.json`, `chat_template.jinja`. A chat template is
untrusted text: it is rendered with Jinja's immutable sandbox, never as Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from seqedge.errors import BadInputError, CorruptFileError, UnsupportedError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json",
                   "chat_template.jinja")
MAX_TOKENIZER_FILE = 64 << 20  # bytes: a tokenizer.json of a 256k vocabulary is ~20 MB


def tokenizer_files(folder: Path) -> dict[str, Path]:
    """The tokenizer files present in `folder` (empty when it has no tokenizer.json)."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        return {}
    return {n: folder / n for n in TOKENIZER_FILES if (folder / n).is_file()}


def _check_size(path: Path) -> None:
    if path.stat().st_size > MAX_TOKENIZER_FILE:
        raise CorruptFileError(f"{path} is larger than {MAX_TOKENIZER_FILE >> 20} MB", "check the file")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    _check_size(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e})", "re-download the tokenizer files") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} is not a JSON object", "re-download the tokenizer files")
    return data


def _token_text(tok) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(tok, dict):
        tok = tok.get("content")
    return tok if isinstance(tok, str) else None


class ByteTokenizer:
    """seqedge's byte-level models: every byte is a token, no special tokens."""

    kind = "bytes"
    eos_ids: tuple[int, ...] = ()
    bos_id: int | None = None
    chat_template = None
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(i & 0xFF for i in ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return bytes(i & 0xFF for i in ids)

    def chat(self, prompt: str) -> list[int]:
        raise UnsupportedError("this model has no chat template (a byte-level model)", "use --prompt without --chat")

    def to_json(self) -> dict:
        return {"kind": self.kind}


@dataclass
class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer with the special-token facts from its config files."""

    folder: Path
    kind: str = "hf"
    bos_id: int | None = None
    add_bos: bool = False
    eos_ids: tuple[int, ...] = ()
    chat_template: str | None = None
    tokens: dict = field(default_factory=dict)

    def __post_init__(self):
        from tokenizers import Tokenizer

        path = self.folder / "tokenizer.json"
        _check_size(path)
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust library's own exception type
            raise CorruptFileError(f"{path} is not a tokenizer the `tokenizers` library can read ({e})",
                                   "re-download the tokenizer files") from None
        cfg = _read_json(self.folder / "tokenizer_config.json")
        gen = _read_json(self.folder / "generation_config.json")
        ids = lambda t: self.tok.token_to_id(t) if t else None  # noqa: E731
        bos = _token_text(cfg.get("bos_token"))
        self.bos_id = gen.get("bos_token_id") if isinstance(gen.get("bos_token_id"), int) else ids(bos)
        self.add_bos = bool(cfg.get("add_bos_token", False)) and self.bos_id is not None
        eos = gen.get("eos_token_id")
        eos = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
        cfg_eos = ids(_token_text(cfg.get("eos_token")))
        self.eos_ids = tuple(dict.fromkeys(i for i in [*eos, cfg_eos] if isinstance(i, int)))
        template = cfg.get("chat_template")
        if (self.folder / "chat_template.jinja").is_file():
            template = (self.folder / "chat_template.jinja").read_text(encoding="utf-8")
        self.chat_template = template if isinstance(template, str) else None
        self.tokens = {k: _token_text(cfg.get(k)) for k in ("bos_token", "eos_token")}

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, special: bool = True) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if special and self.add_bos and self.bos_id is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.decode(ids).encode()

    def chat(self, prompt: str) -> list[int]:
        """The prompt as one user turn through the checkpoint's chat template, ready for the reply."""
        return self.tok.encode(self.chat_text(prompt), add_special_tokens=False).ids

    def chat_frame(self) -> dict | None:
        """The template rendered around the user's turn, {"prefix", "suffix"}, for runtimes without a template
        engine (the native runner, apps): prefix + prompt + suffix is exactly what chat() encodes. None when
        there is no template, or it treats the prompt as more than text to place (it must appear once,
        unchanged, whatever it is)."""
        if not self.chat_template:
            return None
        marks = ("\u2063seqedge-turn-a\u2063", "\u2063seqedge-turn-b\u2063")
        try:
            texts = [self.chat_text(m) for m in marks]
        except (CorruptFileError, UnsupportedError):
            return None
        if texts[0].count(marks[0]) != 1:
            return None
        prefix, suffix = texts[0].split(marks[0])
        return {"prefix": prefix, "suffix": suffix} if texts[1] == prefix + marks[1] + suffix else None

    def chat_text(self, prompt: str) -> str:
        if not self.chat_template:
            raise UnsupportedError(f"the tokenizer in {self.folder} has no chat template", "use --prompt without --chat")
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _template_error
        try:
            return env.from_string(self.chat_template).render(
                messages=[{"role": "user", "content": prompt}], add_generation_prompt=True, **self.tokens)
        except TemplateError as e:
            raise CorruptFileError(f"the chat template in {self.folder} cannot be rendered ({e})",
                                   "use --prompt without --chat") from None

    def to_json(self) -> dict:
        return {"kind": self.kind, "file": "tokenizer.json", "vocab_size": self.vocab_size, "bos_id": self.bos_id,
                "add_bos": self.add_bos, "eos_ids": list(self.eos_ids), "chat_template": self.chat_template is not None,
                **({"chat": frame} if (frame := self.chat_frame()) else {})}


def _template_error(message: str):
    from jinja2 import TemplateError

    raise TemplateError(message)


def load_tokenizer(folder: Path | str | None):
    """The tokenizer stored in a checkpoint or artifact folder; bytes when it has none."""
    if folder is None or not (Path(folder) / "tokenizer.json").is_file():
        return ByteTokenizer()
    return HFTokenizer(Path(folder))


def check_fits(tok, vocab_size: int, where: str) -> None:
    """A tokenizer whose ids reach past the model's embedding table belongs to another model."""
    if tok.vocab_size > vocab_size:
        raise BadInputError(f"the tokenizer in {where} has {tok.vocab_size} tokens but the model's vocabulary is "
                            f"{vocab_size}", "use the tokenizer that belongs to this checkpoint")
