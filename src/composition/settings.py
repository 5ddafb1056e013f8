"""Settings: environment variables (`GOVKERNEL_*`) and an optional TOML file, parsed once.

Precedence, lowest first: defaults, the TOML file, environment variables, command-line flags.
Every problem is collected and reported together in one `ConfigurationError`, each naming
the setting, where its value came from (an environment variable, `file:key` or a flag) and
the values it allows. Credentials are never echoed: not in errors, reprs or help texts.

The file (path from `GOVKERNEL_CONFIG` or `--config`):

    environment = "staging"            # development | test | staging | production
    tenant = "acme"
    service = "govkernel"
    actor = "alice"                    # default: $USER
    store = "surrealkv:///var/lib/govkernel/store"   # memory:// mem:// surrealkv:// ws:// wss://
    data_dir = "/var/lib/govkernel"
    change_freeze = false
    workflows = ["payments.flows:registry"]   # your workflows, for the CLI (module:attribute)
    retired_workflows = ["payments.flows_v1:payout"]   # earlier versions, finishing their runs

    [surrealdb]
    namespace = "govkernel"
    database = "govkernel"
    username = "root"
    password = "..."

The audit key (`audit_key = "..."`, or GOVKERNEL_AUDIT_KEY) seals each execution's audit head.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import field, frozen

from adapters.surrealdb.address import dialable, names_credentials
from composition import files
from domain.model.environment import Environment
from domain.model.errors import InvalidInput, both_ends, reduced
from domain.model.seal import AuditKey
from domain.model.validation import ACTOR_NAME, ACTOR_RULE, IDENTIFIER, IDENTIFIER_RULE

PREFIX = "GOVKERNEL_"
CONFIG_ENV = "GOVKERNEL_CONFIG"
DEFAULT_DATA_DIR = ".govkernel"
DEFAULT_POLICY_REF = "POL-KNOWLEDGE-1"
DEFAULT_ACTOR = "operator"

# A settings file is a few lines; anything larger is not one (and is not read whole).
MAX_CONFIG_BYTES = 1024 * 1024

MEMORY_SCHEMES = ("memory",)
EMBEDDED_SURREAL_SCHEMES = ("mem", "surrealkv")
REMOTE_SCHEMES = ("ws", "wss")
SCHEMES = MEMORY_SCHEMES + EMBEDDED_SURREAL_SCHEMES + REMOTE_SCHEMES

_NAME = IDENTIFIER
_ACTOR = ACTOR_NAME
_SURREAL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}\Z")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@frozen
class Problem:
    """One bad setting: which, from where, what is wrong and (if useful) what is allowed."""

    key: str
    source: str
    message: str
    allowed: str | None = None

    def __str__(self) -> str:
        where = self.source if self.source == self.key else f"{self.source} ({self.key})"
        text = f"{where}: {self.message}"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


class ConfigurationError(Exception):
    """Every problem found in the configuration, reported together."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({count} problem{'s' * (count != 1)}):\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return reduced(self)


def redact_url(url: str) -> str:
    """The URL as it may be shown: nothing in it that may be a credential, however mistyped.

    A local store's URL is a path, shown whole but for anything up to an `@` in it. A
    server's shows its scheme, host, numeric port and path; a `user:password@` part, a
    "port" that is no number (a password typed where the host ends), path parameters and a
    query are starred, and what does not even parse as `scheme://host` is shown as its
    scheme alone."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    scheme = parts.scheme
    rest = url[len(scheme) + 1 :] if scheme else url
    lowered = scheme.lower()
    if scheme and lowered not in (*SCHEMES, "file", "http", "https"):
        # Text before a `:` is a scheme only if it names one: else it may be a user name or
        # a password typed in the wrong place (found by a credentials pass, h160).
        return "***"
    if lowered in ("surrealkv", "file") and rest.startswith("//"):
        if "@" not in rest:
            return url
        # A user:password@ typed before a path is starred like a server's, up to the last
        # `@`: a password may hold `/`, `?` or `#`, where a URL's host would end.
        return f"{scheme}://***@{rest[2:].rsplit('@', 1)[1]}"
    if lowered in (*MEMORY_SCHEMES, "mem") and rest.startswith("//"):
        return url if rest == "//" else f"{scheme}://***"
    prefix = f"{scheme}:" if scheme else ""
    if not rest:
        return url
    if rest.startswith("//") and names_credentials(rest[2:]) and "@" not in parts.netloc:
        # An `@` past where the host seems to end (a password holding /, ? or #, or a path
        # holding an `@`), or one percent-encoded, once or twice (the credentials typed
        # before it then parse as the host): which part is the host cannot be told, and
        # none of it is shown.
        return f"{scheme}://***"
    if not rest.startswith("//") or not parts.hostname:
        return f"{prefix}***"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if not _HOSTLIKE.fullmatch(parts.hostname):  # no host holds these: typed elsewhere (h161)
        host = "***"
    try:
        port = "" if parts.port is None else f":{parts.port}"
    except ValueError:
        # A "port" that is no number: a password typed where the host ends, its user name
        # taken for the host and the rest for the path (h160): none of it is shown.
        return f"{scheme}://***"
    userinfo = "***@" if "@" in parts.netloc else ""
    path = parts.path.split(";", 1)[0] + (";***" if ";" in parts.path else "")
    # Credentials typed again after the host, or a `:` or white space in the path (which
    # no server path has, and `urlsplit` drops some of): none of the path is shown.
    after_host = rest[2:].partition("/")[2]
    if after_host and (
        "@" in parts.netloc  # (a password typed twice, once after the host: h161)
        or ":" in after_host
        or names_credentials(after_host)
        or any(c.isspace() or not c.isprintable() for c in after_host)
    ):
        path = "/***"
    query = "?***" if parts.query else ""
    return f"{prefix}//{userinfo}{host}{port}{path}{query}"


_HOSTLIKE = re.compile(r"[\w.\-:]+")


def _secret_repr(value: object) -> str:
    return "None" if value is None else "'***'"


def _as_path(value: object) -> Any:
    # A path given as text is a path; anything else (an empty text too) is refused below.
    return Path(value) if isinstance(value, str) and value else value


def _as_tuple(value: Any) -> Any:
    # A list, as a settings file writes them, is the tuple it reads as; anything else is
    # refused below.
    return tuple(value) if isinstance(value, list) else value


@frozen
class Settings:
    environment: Environment = Environment.DEVELOPMENT
    tenant: str = "default"
    service: str = "govkernel"
    actor: str = DEFAULT_ACTOR
    data_dir: Path = field(default=Path(DEFAULT_DATA_DIR), converter=_as_path)
    # Named in code, never assumed: `load_settings` gives surrealkv://<data dir>/store.
    store_url: str = field(default="", repr=lambda url: repr(redact_url(url)))
    namespace: str = "govkernel"
    database: str = "govkernel"
    username: str | None = field(default=None, repr=_secret_repr)
    password: str | None = field(default=None, repr=_secret_repr)
    # Seals every execution's audit head (domain.model.seal); None: executions go unsealed.
    audit_key: str | None = field(default=None, repr=_secret_repr)
    # The key it replaces: `audit seal` moves the seals that key made to this one.
    previous_audit_key: str | None = field(default=None, repr=_secret_repr)
    change_freeze: bool = False
    # Your own workflows, as `module:attribute` (composition.plugins): what the CLI runs,
    # recovers and approves besides the built-in ones.
    workflows: tuple[str, ...] = field(default=(), converter=_as_tuple)
    # Earlier versions of them, kept only to finish the executions they started.
    retired_workflows: tuple[str, ...] = field(default=(), converter=_as_tuple)
    # The settings file's directory when it names them: their modules are looked for there too.
    workflows_dir: Path | None = None
    retired_workflows_dir: Path | None = None
    # Where each value came from ("default", "GOVKERNEL_TENANT", "file.toml:tenant", "--store").
    sources: Mapping[str, str] = field(factory=dict, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # Settings built in code are held to what `load_settings` accepts, so that a bad
        # tenant or an unusable store URL never reaches a store.
        problems = _problems_in(self)
        if problems:
            raise ConfigurationError(problems)

    @property
    def store_scheme(self) -> str:
        return urlsplit(self.store_url).scheme

    @property
    def exclusive_store(self) -> bool:
        """Embedded stores are held by one process (the surrealkv lock proves it)."""
        return self.store_scheme in MEMORY_SCHEMES + EMBEDDED_SURREAL_SCHEMES

    @property
    def display_store(self) -> str:
        return redact_url(self.store_url)


# -- the keys ------------------------------------------------------------------------------


@frozen
class _Key:
    name: str  # the Settings attribute
    env: str  # the environment variable
    file_path: tuple[str, ...]  # where it lives in the TOML file
    secret: bool = False


KEYS: tuple[_Key, ...] = (
    _Key("environment", "GOVKERNEL_ENVIRONMENT", ("environment",)),
    _Key("tenant", "GOVKERNEL_TENANT", ("tenant",)),
    _Key("service", "GOVKERNEL_SERVICE", ("service",)),
    _Key("actor", "GOVKERNEL_ACTOR", ("actor",)),
    _Key("store_url", "GOVKERNEL_STORE", ("store",)),
    _Key("namespace", "GOVKERNEL_SURREAL_NAMESPACE", ("surrealdb", "namespace")),
    _Key("database", "GOVKERNEL_SURREAL_DATABASE", ("surrealdb", "database")),
    _Key("username", "GOVKERNEL_SURREAL_USERNAME", ("surrealdb", "username"), secret=True),
    _Key("password", "GOVKERNEL_SURREAL_PASSWORD", ("surrealdb", "password"), secret=True),
    _Key("audit_key", "GOVKERNEL_AUDIT_KEY", ("audit_key",), secret=True),
    _Key(
        "previous_audit_key",
        "GOVKERNEL_AUDIT_PREVIOUS_KEY",
        ("previous_audit_key",),
        secret=True,
    ),
    _Key("data_dir", "GOVKERNEL_DATA_DIR", ("data_dir",)),
    _Key("change_freeze", "GOVKERNEL_CHANGE_FREEZE", ("change_freeze",)),
    _Key("workflows", "GOVKERNEL_WORKFLOWS", ("workflows",)),
    _Key("retired_workflows", "GOVKERNEL_RETIRED_WORKFLOWS", ("retired_workflows",)),
)
_BY_NAME = {k.name: k for k in KEYS}
ENV_VARS = (*(k.env for k in KEYS), CONFIG_ENV)


@frozen
class _Raw:
    value: object
    source: str
    # What a relative path in it is relative to: the file's directory for a file's values
    # (run from anywhere, a config names the same store), the working directory otherwise.
    base: Path | None = None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, tuple[object, str]] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Parse and validate everything at once.

    `config_file` (e.g. from `--config`) wins over `$GOVKERNEL_CONFIG`; `overrides` maps a
    setting name to (value, source) for command-line flags such as `--store`.
    """
    env = dict(os.environ if environ is None else environ)
    base = cwd or working_directory()
    problems: list[Problem] = []
    raw: dict[str, _Raw] = {}

    path_source = "--config" if config_file is not None else CONFIG_ENV
    path_value = os.fspath(config_file) if config_file is not None else env.get(CONFIG_ENV)
    if path_value:
        raw.update(_read_file(Path(path_value), path_source, base, problems))
    elif path_value is not None:
        problems.append(Problem("config", path_source, "must not be empty", "a TOML file path"))
    for key in KEYS:
        if key.env in env:
            raw[key.name] = _Raw(env[key.env], key.env)
    for name, (value, source) in (overrides or {}).items():
        if name not in _BY_NAME:
            raise ValueError(f"unknown setting {name!r}")
        raw[name] = _Raw(value, source)

    values: dict[str, Any] = {}
    for key in KEYS:
        if key.name in raw:
            parsed = _parse(key, raw[key.name], raw[key.name].base or base, problems)
            if parsed is not _INVALID:
                values[key.name] = parsed
    _check_combinations(values, raw, problems)
    if problems:
        raise ConfigurationError(problems)

    if "actor" not in values:
        values["actor"] = _default_actor(env)
    if "data_dir" in values:
        data_dir: Path = values["data_dir"]
    elif base is not None:
        data_dir = base / DEFAULT_DATA_DIR
    elif "store_url" in values:  # only the default store is in it
        data_dir = Path(DEFAULT_DATA_DIR)
    else:
        raise ConfigurationError(
            [Problem("store_url", "default", f"the default store is under {NO_DIRECTORY}")]
        )
    values["data_dir"] = data_dir
    if "store_url" not in values:
        values["store_url"] = f"surrealkv://{data_dir / 'store'}"
    sources = {key.name: raw[key.name].source if key.name in raw else "default" for key in KEYS}
    for named in ("workflows", "retired_workflows"):
        if named in raw:
            values[f"{named}_dir"] = raw[named].base
    return Settings(**values, sources=sources)


def _default_actor(env: Mapping[str, str]) -> str:
    """The login name ($USER, $LOGNAME) when it is a valid actor, else `operator`."""
    for name in ("USER", "LOGNAME"):
        value = env.get(name, "")
        if _ACTOR.match(value):
            return value
    return DEFAULT_ACTOR


# -- parsing -------------------------------------------------------------------------------

_INVALID = object()


def working_directory() -> Path | None:
    """The directory relative paths are read from, or None if it was deleted while this
    process was in it: only a relative path then fails, by name, not every command."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        return None


NO_DIRECTORY = (
    "the working directory, which no longer exists (deleted while this process was in it):"
    " give an absolute path, or run from a directory that exists"
)


def _under(base: Path | None, path: Path) -> Path | None:
    """`path` made absolute from `base`; None for a relative one with no working directory."""
    if path.is_absolute():
        return path
    return None if base is None else base / path


def _read_file(
    given: Path, source: str, base: Path | None, problems: list[Problem]
) -> dict[str, _Raw]:
    path = _under(base, given)
    if path is None:
        problems.append(
            Problem("config", source, f"{_clip(str(given))} is relative to {NO_DIRECTORY}")
        )
        return {}
    try:
        # A byte order mark, as some editors write, is no part of the TOML.
        document = tomllib.loads(files.read_regular(path, MAX_CONFIG_BYTES).decode("utf-8-sig"))
    except files.UnreadableFile as exc:
        problems.append(Problem("config", source, f"{_clip(str(path))}: {exc}"))
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # tomllib names the line and column, never the text: no secret can leak through it.
        problems.append(Problem("config", f"{path}", f"not valid TOML: {exc}"))
        return {}
    except RecursionError:  # tomllib reads nested arrays and tables by recursion
        problems.append(Problem("config", f"{path}", "not a settings file: nested too deeply"))
        return {}
    found: dict[str, _Raw] = {}
    known = {k.file_path: k for k in KEYS}
    sections = {p[0] for p in known if len(p) > 1}

    def walk(table: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for name, value in table.items():
            here = (*prefix, name)
            dotted = ".".join(here)
            if here in known:
                found[known[here].name] = _Raw(value, f"{path}:{dotted}", path.parent)
            elif not prefix and name in sections and isinstance(value, dict):
                walk(value, here)
            elif not prefix and name in sections:
                problems.append(
                    Problem(dotted, f"{path}:{dotted}", f"must be a table ([{name}])", None)
                )
            else:
                allowed = ", ".join(".".join(p) for p in known)
                problems.append(Problem(dotted, f"{path}:{dotted}", "unknown setting", allowed))

    walk(document, ())
    return found


def _parse(key: _Key, raw: _Raw, base: Path | None, problems: list[Problem]) -> object:
    def bad(message: str, allowed: str | None = None) -> object:
        problems.append(Problem(key.name, raw.source, message, allowed))
        return _INVALID

    value = raw.value
    if key.name == "change_freeze":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, str):  # a TOML value: true or false, or one of the words
            quoted = ", ".join(f'"{w}"' for w in _TRUE + _FALSE)
            return bad(f"{_shown(key, value)} is not a boolean", f"true, false, {quoted}")
        return bad(f"{_shown(key, value)} is not a boolean", ", ".join(_TRUE + _FALSE))
    if key.name in ("workflows", "retired_workflows"):
        return _workflows(value, bad)
    if not isinstance(value, str):
        return bad(f"must be a string, got {type(value).__name__}")
    parser = _PARSERS[key.name]
    return parser(key, value, base, bad)


Bad = Callable[..., object]


# A module path and an attribute path: `payments.flows:registry`, `app:FLOWS.v2`.
_WORKFLOW_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
_WORKFLOW_ALLOWED = "module:attribute (e.g. payments.flows:registry), comma-separated"


def _workflows(value: object, bad: Bad) -> object:
    """Comma-separated in the environment, a string or a list of strings in the file."""
    if isinstance(value, str):
        specs = [part.strip() for part in value.split(",")]
        if value.strip() == "":
            return ()  # set but empty: none of your own
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        specs = [v.strip() for v in value]
    elif isinstance(value, list):
        item = next(v for v in value if not isinstance(v, str))
        return bad(f"must be a list of strings, and holds a {type(item).__name__}")
    else:
        return bad(f"must be a string or a list of strings, got {type(value).__name__}")
    wrong = [s for s in specs if not _WORKFLOW_SPEC.match(s)]
    if wrong:
        return bad(f"{_clip(wrong[0])} is not a module:attribute reference", _WORKFLOW_ALLOWED)
    twice = next((spec for i, spec in enumerate(specs) if spec in specs[:i]), None)
    if twice is not None:
        return bad(f"names {_clip(twice)} twice")
    return tuple(specs)


def _environment(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
    try:
        return Environment(value.strip().lower())
    except ValueError:
        return bad(f"{_clip(value)} is not an environment", ", ".join(e.value for e in Environment))


def _name(
    pattern: re.Pattern[str], allowed: str
) -> Callable[[_Key, str, Path | None, Bad], object]:
    def parse(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
        if pattern.match(value):
            return value
        return bad(f"{_shown(key, value)} is not a valid {key.name}", allowed)

    return parse


def _secret(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
    # A password is taken as typed (spaces may be part of it); a user name of spaces alone
    # names nobody.
    if not value or (key.name == "username" and not value.strip()):
        return bad("must not be empty")
    if any(ch in value for ch in "\x00\n\r"):
        return bad("must not contain NUL or line breaks")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a byte that is not UTF-8, in the environment
        return bad("is not valid Unicode text")
    return value


def _audit_key(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
    try:
        AuditKey.from_text(value)
    except InvalidInput as exc:  # its words never quote the key
        return bad(exc.problem)
    return value


def _previous_audit_key(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
    # Only named to move its seals to the new key: as older govkernels took keys (h156).
    try:
        AuditKey.earlier(value)
    except InvalidInput as exc:
        return bad(exc.problem)
    return value


def _data_dir(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
    if not value.strip() or "\x00" in value:
        return bad("must be a directory path")
    if value != value.strip():
        return bad(f"{_clip(value)} begins or ends with white space")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a byte the file system name holds that is no UTF-8
        return bad(f"{_clip(value)}: the engine takes directory paths in UTF-8 only")
    given = Path(value).expanduser()
    path = _under(base, given)
    if path is None:
        return bad(f"{given} is relative to {NO_DIRECTORY}")
    problem = _directory_problem(path)
    return bad(problem) if problem else path


def _directory_problem(path: Path) -> str | None:
    """Why `path` cannot be made or used as a directory, if it cannot: a file is there, or
    a symbolic link to nothing on the way (making the directory would make the link's
    target, wherever that points)."""
    try:
        if path.exists() and not path.is_dir():
            return f"{_clip(str(path))} exists and is not a directory"
        for step in (path, *path.parents):
            if os.path.lexists(step):
                if step.is_symlink() and not step.exists():
                    return f"{_clip(str(step))} is a symbolic link to nothing"
                return None
    except OSError as exc:  # a directory on the way this user may not enter, say
        return f"{_clip(str(path))} cannot be reached: {exc.strerror or exc}"
    return None


def _store_url(key: _Key, value: str, base: Path | None, bad: Bad) -> object:
    allowed = "memory://, mem://, surrealkv://PATH, ws://HOST:PORT, wss://HOST:PORT"
    shown = _clip(redact_url(value))
    # What is wrong is said in words: the value itself may be a credential typed in the
    # wrong place, and is shown starred.
    if "://" not in value:
        scheme = value.strip().rstrip(":/").lower()
        if scheme in SCHEMES:  # a scheme's name alone holds no secret: said as given
            meant = next(a for a in allowed.split(", ") if a.startswith(f"{scheme}://"))
            return bad(f"{scheme!r} is not a store URL: did you mean {meant}?", allowed)
        head = value.split(":", 1)[0].strip().lower()
        if ":" in value and head in SCHEMES:  # surrealkv:/data, one slash short
            return bad(f"{shown} is not a store URL: write {head}://, two slashes", allowed)
        # A path alone: a directory is the usual store, and its URL is one prefix away.
        a_path = value.lstrip().startswith(("/", ".", "~"))
        said = "; a directory is given as surrealkv://PATH" if a_path else ""
        return bad(f"{shown} is not a store URL (no `scheme://`{said})", allowed)
    if value != value.strip():
        # A trailing space made a second store beside the first, its name a space longer.
        # Shown with its white space around the URL starred alone (a leading space would
        # make it no URL, every character of it starred).
        core = value.strip()
        around = value.split(core, 1)
        shown = _clip(around[0] + redact_url(core) + around[1])
        return bad(f"{shown} begins or ends with white space", allowed)
    try:
        parts = urlsplit(value)
    except ValueError:
        return bad(f"{shown} is not a valid URL", allowed)
    try:
        port = parts.port
    except ValueError:
        port = 0
    scheme = parts.scheme.lower()
    if port == 0 and scheme not in ("surrealkv", "file"):  # (None: the scheme's own port)
        return bad(f"{shown}: the port must be a number from 1 to 65535", allowed)
    rest = value.split("://", 1)[1]
    if scheme not in SCHEMES:
        # Its name is not repeated (it may be a password typed there): one it is close to is.
        close = difflib.get_close_matches(scheme, (*SCHEMES, "surrealkv"), n=1, cutoff=0.75)
        meant = f": did you mean {close[0]}://?" if close else ""
        return bad(f"unknown store scheme in {shown}{meant}", allowed)
    # A server's URL holds no `@` anywhere: one after a `/` is a password that held one,
    # and `%40` is one percent-encoded (`user%3Apassword%40host` would be taken for a host).
    if "@" in parts.netloc or (scheme in REMOTE_SCHEMES and names_credentials(rest)):
        return bad(
            f"{shown} embeds credentials; set them with GOVKERNEL_SURREAL_USERNAME and"
            " GOVKERNEL_SURREAL_PASSWORD (or [surrealdb] in the config file) instead"
        )
    if scheme in ("memory", "mem"):
        if rest.strip("/"):
            return bad(f"{shown}: {scheme}:// takes no path", allowed)
        return f"{scheme}://"
    if scheme == "surrealkv":
        if not rest.strip() or "\x00" in rest:
            return bad(f"{shown}: surrealkv:// needs a directory path", allowed)
        if rest != rest.strip():
            return bad(f"{shown}: the path begins or ends with white space", allowed)
        if "://" in rest:  # another URL pasted in (credentials and all), not a directory
            return bad(f"{shown}: the path holds `://`: give one URL", allowed)
        try:
            rest.encode("utf-8")
        except UnicodeEncodeError:  # a byte the file system name holds that is no UTF-8
            return bad(f"{shown}: the engine takes directory paths in UTF-8 only", allowed)
        given = Path(rest).expanduser()
        path = _under(base, given)
        if path is None:
            return bad(f"{shown}: {given} is relative to {NO_DIRECTORY}", allowed)
        problem = _directory_problem(path)
        return bad(f"{shown}: {problem}") if problem else f"surrealkv://{path}"
    if not parts.hostname:
        return bad(f"{shown}: {scheme}:// needs a host", allowed)
    if any(c.isspace() or not c.isprintable() for c in rest):
        return bad(f"{shown}: a server's URL holds no white space or control characters")
    if not dialable(parts.hostname):
        # Named only if it could be a host: else it may be a password typed there (h161).
        named = _clip(parts.hostname) if _HOSTLIKE.fullmatch(parts.hostname) else "the host"
        return bad(f"{shown}: {named} is not a valid host name", allowed)
    if parts.query or parts.fragment or value.rstrip().endswith(("?", "#")) or ";" in rest:
        # The SDK would drop them, or dial them as part of the path (path parameters failed
        # as the connection opened, "ValueError"): a credential typed there would be ignored
        # in silence (shown starred, as a query is).
        return bad(
            f"{shown}: a server's URL takes no query (`?...`), fragment (`#...`) or path"
            " parameters (`;...`); credentials go in GOVKERNEL_SURREAL_USERNAME and"
            " GOVKERNEL_SURREAL_PASSWORD",
            allowed,
        )
    return value


def _shown(key: _Key, value: object) -> str:
    if key.secret:
        return "the value"
    return _clip(value) if isinstance(value, str) else _clip(repr(value))[1:-1]


def _clip(text: str, most: int = 160) -> str:
    """Text as a message quotes it (repr): its two ends, when too long to be read whole."""
    return repr(both_ends(text, most))


_PARSERS: dict[str, Callable[[_Key, str, Path | None, Bad], object]] = {
    "environment": _environment,
    "tenant": _name(_NAME, IDENTIFIER_RULE),
    "service": _name(_NAME, IDENTIFIER_RULE),
    "actor": _name(_ACTOR, ACTOR_RULE),
    "store_url": _store_url,
    "namespace": _name(_SURREAL_NAME, "1-64 ASCII letters, digits, '_' or '-'"),
    "database": _name(_SURREAL_NAME, "1-64 ASCII letters, digits, '_' or '-'"),
    "username": _secret,
    "password": _secret,
    "audit_key": _audit_key,
    "previous_audit_key": _previous_audit_key,
    "data_dir": _data_dir,
}


def _problems_in(settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    for key in KEYS:
        value = getattr(settings, key.name)

        def bad(message: str, allowed: str | None = None, key: _Key = key) -> object:
            problems.append(Problem(key.name, "Settings", message, allowed))
            return _INVALID

        if key.name == "environment":
            if not isinstance(value, Environment):
                bad(
                    f"must be an Environment, got {type(value).__name__}"
                    + (
                        f" (Environment({value!r}) if it names one)"
                        if isinstance(value, str)
                        else ""
                    ),
                    Environment.spelled_in_code(),
                )
        elif key.name == "change_freeze":
            if not isinstance(value, bool):
                bad(f"must be a bool, got {type(value).__name__}")
        elif key.name in ("workflows", "retired_workflows"):
            if not isinstance(value, tuple):
                bad(
                    "must be a list or tuple of module:attribute strings,"
                    f" got {type(value).__name__}"
                )
            else:
                _workflows(list(value), bad)
        elif key.name == "data_dir":
            if not isinstance(value, Path):
                bad(f"must be a path (a Path or a str), got {type(value).__name__}")
        elif value is None and key.secret:
            continue
        elif key.name == "store_url" and value == "":
            bad(
                "no store named: give one (memory://, mem://, surrealkv://PATH, ws://HOST:PORT),"
                " or build the settings with load_settings(), whose default is"
                " surrealkv://<data dir>/store"
            )
        elif not isinstance(value, str):
            bad(f"must be a string, got {type(value).__name__}")
        else:
            _PARSERS[key.name](key, value, working_directory(), bad)
    if (settings.username is None) != (settings.password is None):
        problems.append(Problem("username", "Settings", "username and password go together"))
    where = settings.sources.get("previous_audit_key", "Settings")
    problems += _key_pair(settings.audit_key, settings.previous_audit_key, where)
    return problems


def _check_combinations(
    values: Mapping[str, Any], raw: Mapping[str, _Raw], problems: list[Problem]
) -> None:
    for have, missing in (("username", "password"), ("password", "username")):
        if have in values and missing not in raw:  # one refused itself is said once
            key = _BY_NAME[missing]
            source = f"{key.env} or [{key.file_path[0]}] {key.file_path[1]}"
            problems.append(Problem(missing, source, f"is required when a {have} is set"))
    # Said with every other problem, not only once they are put right.
    # (An audit key given but refused is a problem of its own.)
    if "previous_audit_key" in values and ("audit_key" in values or "audit_key" not in raw):
        where = raw["previous_audit_key"].source
        problems += _key_pair(values.get("audit_key"), values["previous_audit_key"], where)


def _key_pair(key: str | None, previous: str | None, where: str) -> list[Problem]:
    """What is wrong with the previous audit key beside the key (named as the user gave it,
    GOVKERNEL_AUDIT_PREVIOUS_KEY, as every other problem is)."""
    if previous is not None and previous == key:
        return [Problem("previous_audit_key", where, "is the audit key itself")]
    if previous is not None and key is None:
        return [
            Problem(
                "previous_audit_key",
                where,
                "is the key an audit key replaces: set the audit key (GOVKERNEL_AUDIT_KEY) too",
            )
        ]
    return []
