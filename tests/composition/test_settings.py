"""Settings: every key valid and invalid, all problems in one report, secrets never shown."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from composition.settings import (
    CONFIG_ENV,
    MAX_CONFIG_BYTES,
    ConfigurationError,
    Problem,
    Settings,
    load_settings,
    redact_url,
)
from domain.model.environment import Environment
from domain.model.errors import InvalidInput

SECRET = "hunter2-Zq9"


def problems(env: dict[str, str], tmp_path: Path, **kwargs: object) -> tuple[Problem, ...]:
    with pytest.raises(ConfigurationError) as info:
        load_settings(env, cwd=tmp_path, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def only(env: dict[str, str], tmp_path: Path) -> Problem:
    found = problems(env, tmp_path)
    assert len(found) == 1, found
    return found[0]


def test_actor_defaults_to_the_login_name(tmp_path: Path) -> None:
    assert load_settings({"USER": "maria"}, cwd=tmp_path).actor == "maria"
    assert load_settings({"LOGNAME": "li.wei"}, cwd=tmp_path).actor == "li.wei"
    assert load_settings({"USER": "DOMAIN\\x y"}, cwd=tmp_path).actor == "operator"
    assert load_settings({"USER": "maria", "GOVKERNEL_ACTOR": "ops"}, cwd=tmp_path).actor == "ops"


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, cwd=tmp_path)
    assert settings.environment is Environment.DEVELOPMENT
    assert (settings.tenant, settings.service, settings.actor) == (
        "default",
        "govkernel",
        "operator",
    )
    assert settings.data_dir == tmp_path / ".govkernel"
    assert settings.store_url == f"surrealkv://{tmp_path / '.govkernel' / 'store'}"
    assert (settings.namespace, settings.database) == ("govkernel", "govkernel")
    assert settings.username is None and settings.password is None
    assert settings.change_freeze is False
    assert settings.exclusive_store
    assert set(settings.sources.values()) == {"default"}


def test_every_key_from_the_environment(tmp_path: Path) -> None:
    env = {
        "GOVKERNEL_ENVIRONMENT": "Staging",
        "GOVKERNEL_TENANT": "acme",
        "GOVKERNEL_SERVICE": "kernel.api",
        "GOVKERNEL_ACTOR": "alice@example.org",
        "GOVKERNEL_STORE": "wss://db.example.org:8000/rpc",
        "GOVKERNEL_SURREAL_NAMESPACE": "ns_1",
        "GOVKERNEL_SURREAL_DATABASE": "db-2",
        "GOVKERNEL_SURREAL_USERNAME": "root",
        "GOVKERNEL_SURREAL_PASSWORD": SECRET,
        "GOVKERNEL_DATA_DIR": "state",
        "GOVKERNEL_CHANGE_FREEZE": "yes",
        "GOVKERNEL_PEERS_DIR": "/elsewhere",  # other tools' variables are not ours to judge
    }
    s = load_settings(env, cwd=tmp_path)
    assert s.environment is Environment.STAGING
    assert (s.tenant, s.service, s.actor) == ("acme", "kernel.api", "alice@example.org")
    assert s.store_url == "wss://db.example.org:8000/rpc" and not s.exclusive_store
    assert (s.namespace, s.database, s.username, s.password) == ("ns_1", "db-2", "root", SECRET)
    assert s.data_dir == tmp_path / "state"
    assert s.change_freeze is True
    assert s.sources["tenant"] == "GOVKERNEL_TENANT"
    assert SECRET not in repr(s) and "username='***'" in repr(s)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", "memory://"),
        ("mem://", "mem://"),
        ("surrealkv:///abs/store", "surrealkv:///abs/store"),
        ("ws://localhost:8000", "ws://localhost:8000"),
    ],
)
def test_store_urls(tmp_path: Path, url: str, expected: str) -> None:
    assert load_settings({"GOVKERNEL_STORE": url}, cwd=tmp_path).store_url == expected


def test_relative_surrealkv_path_and_data_dir_default_store(tmp_path: Path) -> None:
    rel = load_settings({"GOVKERNEL_STORE": "surrealkv://rel/store"}, cwd=tmp_path)
    assert rel.store_url == f"surrealkv://{tmp_path / 'rel' / 'store'}"
    # A colon in it is no port (it was said to be one that must be a number, h159).
    colon = load_settings({"GOVKERNEL_STORE": "surrealkv://data:v2/store"}, cwd=tmp_path)
    assert colon.store_url == f"surrealkv://{tmp_path / 'data:v2' / 'store'}"
    moved = load_settings({"GOVKERNEL_DATA_DIR": str(tmp_path / "d")}, cwd=tmp_path)
    assert moved.store_url == f"surrealkv://{tmp_path / 'd' / 'store'}"


@pytest.mark.parametrize("under", ["", "sub/store"])
@pytest.mark.parametrize("variable", ["GOVKERNEL_STORE", "GOVKERNEL_DATA_DIR"])
def test_a_store_behind_a_symbolic_link_to_nothing_is_refused(
    tmp_path: Path, variable: str, under: str
) -> None:
    """Making it would make the link's target, wherever that is, not what was named."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    path = link / under if under else link
    value = f"surrealkv://{path}" if variable == "GOVKERNEL_STORE" else str(path)
    with pytest.raises(ConfigurationError, match=f"'{link}' is a symbolic link to nothing"):
        load_settings({variable: value}, cwd=tmp_path)
    (tmp_path / "nowhere").mkdir()  # once the link names a directory, it is a path as any
    assert load_settings({variable: value}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("ON", True), ("1", True), ("no", False), ("0", False), ("off", False)],
)
def test_change_freeze_values(tmp_path: Path, value: str, expected: bool) -> None:
    settings = load_settings({"GOVKERNEL_CHANGE_FREEZE": value}, cwd=tmp_path)
    assert settings.change_freeze is expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (" memory://", "' memory://'"),
        ("\tmem://", "'\\tmem://'"),
        (" surrealkv:///srv/store", "' surrealkv:///srv/store'"),
        (" ws://user:pw@h:8000 ", "' ws://***@h:8000 '"),
    ],
)
def test_a_store_url_with_white_space_around_it_is_shown_with_it(
    tmp_path: Path, value: str, shown: str
) -> None:
    """The URL was starred whole, its white space with it (`'memory:***'`): the message
    hid what it was about (a library user, h155). Credentials in it are still starred."""
    problem = only({"GOVKERNEL_STORE": value}, tmp_path)
    assert f"{shown} begins or ends with white space" in str(problem)
    assert "pw" not in str(problem)


@pytest.mark.parametrize(
    ("var", "value", "key", "needle"),
    [
        ("GOVKERNEL_ENVIRONMENT", "prod", "environment", "development, test, staging, production"),
        ("GOVKERNEL_TENANT", "a b", "tenant", "letters, digits"),
        ("GOVKERNEL_SERVICE", "", "service", "letters, digits"),
        ("GOVKERNEL_ACTOR", "-alice", "actor", "'@'"),
        ("GOVKERNEL_ACTOR", "alice\n", "actor", "'@'"),
        ("GOVKERNEL_TENANT", "default\n", "tenant", "letters, digits"),
        ("GOVKERNEL_SURREAL_DATABASE", "db\n", "database", "1-64 ASCII letters"),
        ("GOVKERNEL_STORE", "foo://x", "store_url", "memory://, mem://, surrealkv://PATH"),
        ("GOVKERNEL_STORE", "localhost:8000", "store_url", "ws://HOST:PORT"),
        ("GOVKERNEL_STORE", "surrealkv://", "store_url", "directory path"),
        ("GOVKERNEL_STORE", "memory://somewhere", "store_url", "takes no path"),
        ("GOVKERNEL_STORE", "ws://:8000", "store_url", "needs a host"),
        ("GOVKERNEL_STORE", "ws://h:notaport", "store_url", "port must be a number"),
        ("GOVKERNEL_STORE", "ws://127.0.0.1:99999", "store_url", "port must be a number"),
        ("GOVKERNEL_STORE", "ws://localhost:0", "store_url", "from 1 to 65535"),
        ("GOVKERNEL_STORE", "ws://[::1:8000", "store_url", "not a valid URL"),
        ("GOVKERNEL_STORE", "garbage", "store_url", "no `scheme://`"),
        ("GOVKERNEL_STORE", "memory", "store_url", "'memory' is not a store URL: did you mean"),
        ("GOVKERNEL_STORE", "SurrealKV:", "store_url", "did you mean surrealkv://PATH?"),
        ("GOVKERNEL_STORE", "file", "store_url", "'***' is not a store URL (no `scheme://`)"),
        ("GOVKERNEL_STORE", "/srv/data", "store_url", "is given as surrealkv://PATH)"),
        ("GOVKERNEL_STORE", "./data", "store_url", "is given as surrealkv://PATH)"),
        ("GOVKERNEL_STORE", "surrealkv:/srv/d", "store_url", "write surrealkv://, two slashes"),
        ("GOVKERNEL_STORE", "ws://h:8000/rpc#x", "store_url", "no query (`?...`), fragment"),
        # Path parameters failed as the connection opened, "h:8000: ValueError" (h159).
        ("GOVKERNEL_STORE", "ws://h:8000/rpc;x", "store_url", "or path parameters (`;...`)"),
        # A URL pasted into a directory path (credentials and all); a surrealkv path with a
        # colon in it, said to have a bad port (h159).
        ("GOVKERNEL_STORE", "surrealkv:///srv/x ws://u:p@h:1", "store_url", "holds `://`"),
        ("GOVKERNEL_STORE", "wss://h/rpc?password=pw", "store_url", "'wss://h/rpc?***': a"),
        ("GOVKERNEL_STORE", "ws://h:8000/rpc?", "store_url", "no query"),
        # Found by a settings pass: a space made a second store beside the first; a host
        # or path the connection cannot use failed as it opened, by an exception's name.
        ("GOVKERNEL_STORE", "surrealkv:///srv/store ", "store_url", "ends with white space"),
        ("GOVKERNEL_STORE", " ws://h:8000", "store_url", "begins or ends with white space"),
        ("GOVKERNEL_STORE", "ws://h:8000/a b", "store_url", "no white space or control"),
        ("GOVKERNEL_STORE", "ws://a..b:8000", "store_url", "'a..b' is not a valid host name"),
        ("GOVKERNEL_STORE", f"ws://{'h' * 300}:8000", "store_url", "is not a valid host name"),
        ("GOVKERNEL_DATA_DIR", "/srv/data ", "data_dir", "ends with white space"),
        ("GOVKERNEL_STORE", "surrealkv:// /srv/store", "store_url", "path begins or ends"),
        ("GOVKERNEL_SURREAL_NAMESPACE", "a;b", "namespace", "1-64 ASCII letters"),
        ("GOVKERNEL_SURREAL_DATABASE", "x y", "database", "1-64 ASCII letters"),
        ("GOVKERNEL_CHANGE_FREEZE", "maybe", "change_freeze", "true, 1, yes, on, false"),
    ],
)
def test_each_invalid_key_names_its_source_and_allowed_values(
    tmp_path: Path, var: str, value: str, key: str, needle: str
) -> None:
    problem = only({var: value}, tmp_path)
    assert (problem.key, problem.source) == (key, var)
    assert needle in str(problem)
    assert str(problem).startswith(f"{var} ({key}): ")


@pytest.mark.parametrize(
    "env",
    [
        {"GOVKERNEL_SURREAL_NAMESPACE": "n" * 100_000},
        {"GOVKERNEL_STORE": "surrealkv:///tmp/" + "a" * 5000},
        {"GOVKERNEL_DATA_DIR": "/tmp/" + "a" * 300 + "/x"},
    ],
    ids=["namespace", "store path", "data dir"],
)
def test_a_value_too_long_to_use_is_refused_quoting_its_ends_only(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A path the file system cannot even look at is a configuration error, not an
    internal one; and a message never repeats a value of any length whole."""
    problem = only(env, tmp_path)
    assert len(str(problem)) < 600 and "..." in str(problem)


def test_a_data_dir_that_is_not_utf8_is_named_itself(tmp_path: Path) -> None:
    """The default store under it was named instead (found by a settings pass)."""
    problem = only({"GOVKERNEL_DATA_DIR": f"{tmp_path}/d\udcff"}, tmp_path)
    assert (problem.key, problem.source) == ("data_dir", "GOVKERNEL_DATA_DIR")
    assert "UTF-8 only" in problem.message


@pytest.mark.parametrize("variable", ["GOVKERNEL_SURREAL_USERNAME", "GOVKERNEL_SURREAL_PASSWORD"])
def test_credentials_that_are_not_unicode_text_are_refused_unquoted(
    tmp_path: Path, variable: str
) -> None:
    env = {"GOVKERNEL_SURREAL_USERNAME": "root", "GOVKERNEL_SURREAL_PASSWORD": "pw"}
    problem = only(env | {variable: "s3cret\udcff"}, tmp_path)
    assert problem.source == variable and problem.message == "is not valid Unicode text"


def test_a_section_of_another_type_is_said_to_be_one(tmp_path: Path) -> None:
    """It was an "unknown setting" (found by a settings pass)."""
    path = tmp_path / "s.toml"
    path.write_text('surrealdb = "x"\n')
    (problem,) = problems({}, tmp_path, config_file=path)
    assert str(problem) == f"{path}:surrealdb (surrealdb): must be a table ([surrealdb])"


def test_the_previous_audit_key_is_judged_with_everything_else(tmp_path: Path) -> None:
    """Its problems were said only once every other was put right (found by a settings
    pass)."""
    previous = "abcdefgh" * 5
    env = {"GOVKERNEL_TENANT": "bad tenant", "GOVKERNEL_AUDIT_PREVIOUS_KEY": previous}
    assert {(p.key, p.source) for p in problems(env, tmp_path)} == {
        ("tenant", "GOVKERNEL_TENANT"),
        ("previous_audit_key", "GOVKERNEL_AUDIT_PREVIOUS_KEY"),
    }
    same = {"GOVKERNEL_AUDIT_KEY": previous, "GOVKERNEL_AUDIT_PREVIOUS_KEY": previous}
    (problem,) = problems(same, tmp_path)
    assert problem.message == "is the audit key itself"


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    problem = only({"GOVKERNEL_DATA_DIR": "file"}, tmp_path)
    assert (problem.key, problem.source) == ("data_dir", "GOVKERNEL_DATA_DIR")
    assert "not a directory" in problem.message


def test_credentials_come_in_pairs_and_are_never_echoed(tmp_path: Path) -> None:
    problem = only({"GOVKERNEL_SURREAL_PASSWORD": SECRET}, tmp_path)
    assert problem.key == "username" and "GOVKERNEL_SURREAL_USERNAME" in problem.source
    problem = only({"GOVKERNEL_SURREAL_USERNAME": "root"}, tmp_path)
    assert problem.key == "password" and "GOVKERNEL_SURREAL_PASSWORD" in problem.source
    # An empty one is refused for itself, not also for lacking its pair.
    problem = only({"GOVKERNEL_SURREAL_USERNAME": ""}, tmp_path)
    assert (problem.key, problem.message) == ("username", "must not be empty")
    bad = {"GOVKERNEL_SURREAL_USERNAME": "root", "GOVKERNEL_SURREAL_PASSWORD": SECRET + "\n"}
    with pytest.raises(ConfigurationError) as info:
        load_settings(bad, cwd=tmp_path)
    assert info.value.problems[0].source == "GOVKERNEL_SURREAL_PASSWORD"
    assert SECRET not in str(info.value)
    blank = {"GOVKERNEL_SURREAL_USERNAME": " ", "GOVKERNEL_SURREAL_PASSWORD": SECRET}
    with pytest.raises(ConfigurationError) as info:
        load_settings(blank, cwd=tmp_path)
    [problem] = info.value.problems
    assert problem.source == "GOVKERNEL_SURREAL_USERNAME" and "must not be empty" in str(problem)
    spaced = {"GOVKERNEL_SURREAL_USERNAME": "root", "GOVKERNEL_SURREAL_PASSWORD": " "}
    assert load_settings(spaced, cwd=tmp_path).password == " "


def test_credentials_in_the_store_url_are_refused_without_echo(tmp_path: Path) -> None:
    problem = only({"GOVKERNEL_STORE": f"ws://admin:{SECRET}@db:8000"}, tmp_path)
    assert problem.key == "store_url" and "GOVKERNEL_SURREAL_PASSWORD" in problem.message
    assert SECRET not in str(problem) and "***@db:8000" in str(problem)
    assert redact_url(f"wss://u:{SECRET}@h/rpc") == "wss://***@h/***"  # (its path too: h161)


@pytest.mark.parametrize(
    "mistyped",
    [
        f"ws:/admin:{SECRET}@db",
        f"surrealkv:admin:{SECRET}@x",
        f"ws:://admin:{SECRET}@db:8000",
        f"wss:///admin:{SECRET}@db",
        f"ws//admin:{SECRET}@db",
        f"memory://admin:{SECRET}",
        f"ws://admin:{SECRET}",
        f"ws://admin:{SECRET}%40db:1",
        f"surrealkv://admin:{SECRET}@/tmp/store",
        f"file://admin:{SECRET}@store",
        f"ws://admin:pa/{SECRET}@127.0.0.1:8000",
        f"ws://admin:2024/{SECRET}@db:8000",  # a "port" that parses: refused for its @ alone
        f"wss://admin:p?{SECRET}@db/rpc",
        f"ws://admin:p#{SECRET}@db:1",
        f"wss://admin%3A{SECRET}%40db.invalid:8000",  # the `@` percent-encoded (h148)
        f"ws://admin%3a{SECRET}%40db",
        f"ws://root%3A{SECRET}%2540127.0.0.1:8000",  # encoded twice (h149)
        f"ws://root%3A{SECRET}%25%34%30127.0.0.1:8000",
        f"ws://root:pa/{SECRET}%40127.0.0.1:8000",  # a password holding a /
        f"ws://127.0.0.1:8000/rpc%40{SECRET}",  # in the path
    ],
)
def test_a_mistyped_url_with_credentials_is_refused_without_echo(
    tmp_path: Path, mistyped: str
) -> None:
    problem = only({"GOVKERNEL_STORE": mistyped}, tmp_path)
    assert SECRET not in str(problem) and "***" in str(problem)


@pytest.mark.parametrize("cut", ["#", "/", "?"])
def test_a_url_is_shown_without_anything_before_its_last_at_sign(
    cut: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A password holding /, ? or # ends a URL's host early: the whole of it is starred.
    shown = redact_url(f"surrealkv://admin:{cut}{SECRET}@/tmp/store")
    assert shown == "surrealkv://***@/tmp/store"
    assert redact_url(f"ws://admin:{cut}{SECRET}@db:8000/rpc") == "ws://***"
    assert redact_url(f"ws://{SECRET[:4]}{cut}{SECRET[4:]}@db:1") == "ws://***"
    assert redact_url("ws://db:8000/rpc") == "ws://db:8000/rpc"  # nothing to hide: all shown
    assert redact_url(f"ws://db:8000/rpc;password={SECRET}") == "ws://db:8000/rpc;***"
    # A percent-encoded `@` leaves the credentials in what parses as the host.
    assert redact_url(f"wss://admin%3A{SECRET}%40db.invalid:8000") == "wss://***"
    # Typed twice (pasted over itself): the second copy is in what parses as the path
    # (found by a re-test, h157, through the white-space message).
    twice = f"ws://admin:{SECRET}@db:8000 ws://admin:{SECRET}@db:8000"
    assert redact_url(twice) == "ws://***"
    # A password typed where the host ends, its user name taken for the host and the rest
    # for the path; text before a `:` that names no scheme; a `:` or white space in a path
    # (a credentials pass, h160).
    for typed in (
        f"ws://admin:a/{SECRET}127.0.0.1:1",
        f"ws://127.0.0.1:a/{SECRET}",
        f"ws://admin:{SECRET}127.0.0.1:1",
        f"{SECRET}:x",
        f"{SECRET}://h",
        f"ws://h:1/admin:{SECRET}",
        f"ws://h:1/x\t{SECRET}",
    ):
        assert SECRET not in redact_url(typed) and "admin" not in redact_url(typed), typed
    # Typed again after the host of a URL that embeds it; a host holding what no host does
    # (a re-test, h161).
    for typed in (
        f"ws://admin:{SECRET}@h:8000/{SECRET}",
        f"ws://{SECRET};x:8000",
        f"ws://{SECRET} x:8000",
        f"ws://{SECRET}%x:8000",
    ):
        assert SECRET not in redact_url(typed), typed
        problem = only({"GOVKERNEL_STORE": typed}, tmp_path_factory.mktemp("typed"))
        assert SECRET.lower() not in str(problem).lower(), problem
    assert redact_url("ws://db:8000/rpc") == "ws://db:8000/rpc"  # still shown: nothing hidden
    assert redact_url("ws://[::1]:8000") == "ws://[::1]:8000"
    # ... with a `;` in the password, where a path's parameters begin (h159).
    semi = f"ws://admin:ab;{SECRET}@db:8000"
    for pasted in (f"{semi} {semi}", f"{semi}/{semi}", f"{semi}{semi}"):
        assert SECRET not in redact_url(pasted) and "ab" not in redact_url(pasted)
    problem = only({"GOVKERNEL_STORE": f" {twice} "}, tmp_path_factory.mktemp("twice"))
    assert SECRET not in str(problem) and "begins or ends with white space" in str(problem)


def test_all_problems_reported_together(tmp_path: Path) -> None:
    env = {
        "GOVKERNEL_ENVIRONMENT": "prod",
        "GOVKERNEL_TENANT": "no spaces please",
        "GOVKERNEL_STORE": "redis://x",
        "GOVKERNEL_CHANGE_FREEZE": "sometimes",
        "GOVKERNEL_SURREAL_PASSWORD": SECRET,
    }
    found = problems(env, tmp_path)
    assert {p.key for p in found} == {
        "environment",
        "tenant",
        "store_url",
        "change_freeze",
        "username",
    }
    with pytest.raises(ConfigurationError) as info:
        load_settings(env, cwd=tmp_path)
    text = str(info.value)
    assert "5 problems" in text
    for var in ("GOVKERNEL_ENVIRONMENT", "GOVKERNEL_TENANT", "GOVKERNEL_STORE"):
        assert var in text
    assert SECRET not in text


CONFIG = """
environment = "test"
tenant = "from-file"
service = "svc"
actor = "bob"
store = "mem://"
data_dir = "data"
change_freeze = true

[surrealdb]
namespace = "fns"
database = "fdb"
username = "root"
password = "{secret}"
"""


def test_every_key_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "govkernel.toml"
    path.write_text(CONFIG.format(secret=SECRET))
    s = load_settings({"GOVKERNEL_CONFIG": str(path)}, cwd=tmp_path)
    assert s.environment is Environment.TEST
    assert (s.tenant, s.service, s.actor, s.store_url) == ("from-file", "svc", "bob", "mem://")
    assert (s.namespace, s.database, s.username, s.password) == ("fns", "fdb", "root", SECRET)
    assert s.data_dir == tmp_path / "data" and s.change_freeze is True
    assert s.sources["password"] == f"{path}:surrealdb.password"


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('tenant = "file"\nstore = "mem://"\n')
    env = {"GOVKERNEL_CONFIG": "ignored.toml", "GOVKERNEL_TENANT": "env"}
    s = load_settings(
        env, config_file=path, overrides={"store_url": ("memory://", "--store")}, cwd=tmp_path
    )
    assert (s.tenant, s.store_url) == ("env", "memory://")
    assert (s.sources["tenant"], s.sources["store_url"]) == ("GOVKERNEL_TENANT", "--store")


def test_file_problems_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'environment = "prod"\ntenant = 5\nchange_freeze = "perhaps"\ncolour = "blue"\n'
        '[surrealdb]\nusername = "root"\npassword = ""\nport = 1\n'
    )
    found = {p.source: p for p in problems({}, tmp_path, config_file=path)}
    assert set(found) == {
        f"{path}:environment",
        f"{path}:tenant",
        f"{path}:change_freeze",
        f"{path}:colour",
        f"{path}:surrealdb.password",
        f"{path}:surrealdb.port",
    }
    assert "development, test, staging, production" in str(found[f"{path}:environment"])
    assert "must be a string, got int" in str(found[f"{path}:tenant"])
    assert "surrealdb.namespace" in str(found[f"{path}:colour"])  # lists the allowed keys


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    missing = only({"GOVKERNEL_CONFIG": "nope.toml"}, tmp_path)
    assert missing.source == "GOVKERNEL_CONFIG" and "not found" in missing.message
    path = tmp_path / "broken.toml"
    path.write_text(f"[surrealdb]\npassword = {SECRET}\n")  # unquoted: invalid TOML
    broken = only({"GOVKERNEL_CONFIG": str(path)}, tmp_path)
    assert "not valid TOML" in broken.message and "line 2" in broken.message
    assert SECRET not in str(broken)
    # Nested deeper than Python's recursion allows (2 KB): an internal error, exit 1, before.
    for deep in ("x = " + "[" * 1000 + "]" * 1000, "x = " + "{a = " * 1000 + "}" * 1000):
        path.write_text(deep)
        nested = only({"GOVKERNEL_CONFIG": str(path)}, tmp_path)
        assert nested.source == str(path) and "nested too deeply" in nested.message
    # From code (no environment variable can hold a NUL): a ValueError before.
    named = only({"GOVKERNEL_CONFIG": "settings\x00.toml"}, tmp_path)
    assert named.source == "GOVKERNEL_CONFIG" and "holds a NUL character" in named.message


def test_a_settings_file_that_is_no_regular_file_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.toml"
    os.mkfifo(fifo)
    found: list[Problem] = []
    # In a thread: a reader that opened the FIFO would wait for a writer for good.
    reading = threading.Thread(target=lambda: found.append(only({CONFIG_ENV: str(fifo)}, tmp_path)))
    reading.start()
    reading.join(timeout=30)
    assert not reading.is_alive() and "is not a regular file" in found[0].message
    assert "is not a regular file" in only({CONFIG_ENV: "/dev/zero"}, tmp_path).message


def test_a_store_path_that_is_not_utf8_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    path = os.fsdecode(bytes(tmp_path) + b"/st\xffore")  # how Python hands such a name over
    problem = only({"GOVKERNEL_STORE": f"surrealkv://{path}"}, tmp_path)
    assert "directory paths in UTF-8 only" in problem.message
    assert list(tmp_path.iterdir()) == []


def test_a_settings_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_bytes(b'\xef\xbb\xbftenant = "acme"\n')
    assert load_settings({CONFIG_ENV: str(path)}, cwd=tmp_path).tenant == "acme"


def test_each_workflows_setting_is_looked_for_beside_where_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "settings.toml"
    path.parent.mkdir()
    path.write_text('retired_workflows = ["old:payout"]\n')
    env = {CONFIG_ENV: str(path), "GOVKERNEL_WORKFLOWS": "new:payout"}
    settings = load_settings(env, cwd=tmp_path)
    assert settings.retired_workflows_dir == path.parent  # the file's, beside it
    assert settings.workflows_dir is None  # the environment's: the working directory


def test_a_settings_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    assert "is a directory, not a file" in only({CONFIG_ENV: str(tmp_path)}, tmp_path).message


def test_a_settings_file_too_large_to_be_one_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    with open(path, "wb") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)  # sparse: nothing is written, nothing need be read
    assert f"is over {MAX_CONFIG_BYTES:,} bytes" in only({CONFIG_ENV: str(path)}, tmp_path).message


def test_settings_repr_hides_secrets() -> None:
    s = Settings(store_url="ws://h:1", username="root", password=SECRET)
    assert SECRET not in repr(s) and "'***'" in repr(s)
    assert redact_url(f"ws://u:{SECRET}@h:1") == "ws://***@h:1"
    with pytest.raises(ConfigurationError) as queried:  # refused, and not echoed either
        Settings(store_url=f"ws://h:1/?password={SECRET}")
    assert SECRET not in str(queried.value) and "ws://h:1/?***" in str(queried.value)
    with pytest.raises(ConfigurationError) as caught:  # built in code, refused all the same
        Settings(store_url=f"ws://u:{SECRET}@h:1", username="root", password=SECRET)
    assert SECRET not in str(caught.value) and "ws://***@h:1" in str(caught.value)


def test_a_toml_number_for_a_boolean_is_refused_saying_what_a_file_takes(tmp_path: Path) -> None:
    path = tmp_path / "freeze.toml"
    path.write_text("change_freeze = 1\n")
    [problem] = problems({}, tmp_path, config_file=path)
    assert "is not a boolean" in str(problem)
    assert problem.allowed is not None and problem.allowed.startswith("true, false, ")
    assert '"1"' in problem.allowed  # the words are strings in a file


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"tenant": "bad tenant\n!"}, "Settings (tenant): 'bad tenant\\n!' is not a valid tenant"),
        ({"actor": ""}, "Settings (actor): '' is not a valid actor"),
        ({"store_url": "surrealkv://"}, "surrealkv:// needs a directory path"),
        ({"store_url": "postgres://x"}, "unknown store scheme"),
        (
            {"environment": "production"},
            "Environment('production') if it names one); allowed: Environment.DEVELOPMENT",
        ),
        ({"username": "root"}, "username and password go together"),
        ({"workflows": ("not a reference",)}, "is not a module:attribute reference"),
        ({"change_freeze": "yes"}, "must be a bool"),
        ({"data_dir": 5}, "must be a path (a Path or a str), got int"),
    ],
)
def test_settings_built_in_code_are_held_to_the_same_rules(
    given: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(**given)  # type: ignore[arg-type]
    assert said in str(caught.value)


def test_settings_built_in_code_name_their_store(tmp_path: Path) -> None:
    """Never assumed: not an in-memory store that loses everything, nor one made in whatever
    directory the code runs from."""
    with pytest.raises(ConfigurationError) as caught:
        Settings(tenant="acme", data_dir=tmp_path)
    assert "store_url" in str(caught.value) and "no store named" in str(caught.value)
    assert "load_settings()" in str(caught.value)
    named = Settings(data_dir=str(tmp_path), store_url=f"surrealkv://{tmp_path / 'store'}")
    assert named.data_dir == tmp_path  # a path given as text is a path
    with pytest.raises(ConfigurationError, match="must be a path"):
        Settings(data_dir="", store_url="memory://")


def test_a_store_url_the_adapter_cannot_use_as_given_is_refused_by_it_too() -> None:
    from adapters.surrealdb import SurrealConfig

    for url in ("surrealkv://", "surrealkv:/tmp/x", "file:"):
        with pytest.raises(ValueError, match="needs a directory path"):
            SurrealConfig(url)
    assert SurrealConfig("surrealkv://rel").path == Path("rel")
    for url in (f"ws://h:1/rpc?password={SECRET}", f"wss://h/rpc#{SECRET}"):
        with pytest.raises(ValueError, match="takes no query") as refused:
            SurrealConfig(url)
        assert SECRET not in str(refused.value)
    # Its repr would have shown it (found by a server-mode pass), also where the URL reads
    # as holding a path first, or a port (found by a secrets pass).
    for url in (
        f"ws://root:{SECRET}@h:1/rpc",
        f"ws://u:S3C/{SECRET}@h:1",
        f"ws://u%3A{SECRET}%40h",
    ):
        with pytest.raises(ValueError, match="takes no credentials") as refused:
            SurrealConfig(url, username="root", password=SECRET)
        assert SECRET not in str(refused.value)
    with pytest.raises(ValueError, match="port must be a number") as refused:
        SurrealConfig(f"ws://127.0.0.1:{SECRET}")
    assert SECRET not in str(refused.value)
    for url in ("ws://a..b:8000", "ws://h:8000/a b", "ws://:8000"):
        with pytest.raises(ValueError, match=r"white space|valid host"):
            SurrealConfig(url)
    for url in ("surrealkv://st ", "surrealkv://st\u00a0", "surrealkv:// st"):
        with pytest.raises(ValueError, match="path begins or ends with white space"):
            SurrealConfig(url)
    with pytest.raises(ValueError, match="username is not valid Unicode text"):
        SurrealConfig("ws://h:1", username="r\udcff", password="pw")
    assert "gkuser" not in repr(SurrealConfig("ws://h:1", username="gkuser", password="pw"))
    # Python's own words quoted the host, a password with it; path parameters were taken,
    # and the repr showed every URL it took whole; a user name taken for the host was
    # named (a credentials pass, h160).
    for url, problem in (
        (f"ws://[admin:{SECRET}@::1]:1", "url is not a valid URL"),
        (f"ws://127.0.0.1:1/x;{SECRET}", "or path parameters"),
        (f"ws://admin:{SECRET}?q127.0.0.1:1", "or path parameters"),
    ):
        with pytest.raises(ValueError, match=problem) as refused:
            SurrealConfig(url)
        assert SECRET not in str(refused.value) and "admin" not in str(refused.value)
    for url in (f"surrealkv://admin:{SECRET}@/tmp/x", f"mem://admin:{SECRET}@"):
        assert SECRET not in repr(SurrealConfig(url))
    # The repr took the text before `://` for a scheme, the whole URL when it had none;
    # any scheme was taken, white space before one too (a re-test, h161).
    for url in (f"ws//admin:{SECRET}@db:8000", SECRET, f"{SECRET}ws://db:8000", " ws://h:1"):
        with pytest.raises(ValueError, match="names no store this adapter opens") as refused:
            SurrealConfig(url)
        assert SECRET not in str(refused.value)
    assert SurrealConfig(f"mem://{SECRET}").where == "mem://"
    assert repr(SurrealConfig("WS://db:8000")).startswith("SurrealConfig(url='WS://***'")


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"url": 5}, "url must be text, got int"),
        ({"url": None}, "url must be text, got NoneType"),
        ({"url": "surrealkv:///tmp/a\x00b"}, "url holds a NUL character"),
        ({"namespace": ""}, "namespace must be non-empty text"),
        ({"database": None}, "database must be non-empty text"),
        ({"password": 5}, "password must be text or None"),
        ({"sync_data": "no"}, "sync_data must be True or False, got 'no'"),
        ({"create": 0}, "create must be True or False, got 0"),
        ({"reply_timeout": float("nan")}, "reply_timeout must be a positive number"),
        ({"reply_timeout": -1}, "reply_timeout must be a positive number"),
        ({"reply_timeout": "60"}, "reply_timeout must be a positive number"),
        ({"audit_key": "k" * 64}, "audit_key: must be an AuditKey or None, got str"),
    ],
    ids=lambda v: repr(v)[:30] if isinstance(v, dict) else "",
)
def test_a_surreal_config_refuses_values_of_the_wrong_kind_when_made(
    given: dict[str, Any], problem: str
) -> None:
    """Each was taken before: the URL 5 failed as the store opened with an AttributeError,
    "no" for sync_data meant yes, and the key's text for a key failed at the first execution
    written, with an AttributeError."""
    from adapters.surrealdb import SurrealConfig

    with pytest.raises((ValueError, InvalidInput), match=re.escape(problem)):
        SurrealConfig(**({"url": "mem://"} | given))


def test_a_memory_store_refuses_a_key_that_is_not_an_audit_key() -> None:
    from adapters.memory import MemoryStore

    with pytest.raises(InvalidInput, match="must be an AuditKey or None, got str"):
        MemoryStore(audit_key="k" * 64)  # type: ignore[arg-type]


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "govkernel.toml"
    config.parent.mkdir()
    config.write_text('store = "surrealkv://state/store"\ndata_dir = "data"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    s = load_settings({"GOVKERNEL_CONFIG": str(config)}, cwd=elsewhere)
    assert s.store_url == f"surrealkv://{config.parent / 'state' / 'store'}"
    assert s.data_dir == config.parent / "data"
    # From the environment, relative to the working directory as before.
    env = {"GOVKERNEL_CONFIG": str(config), "GOVKERNEL_DATA_DIR": "d"}
    assert load_settings(env, cwd=elsewhere).data_dir == elsewhere / "d"


@pytest.mark.parametrize("key", ["GOVKERNEL_ENVIRONMENT", "GOVKERNEL_WORKFLOWS"])
def test_a_long_bad_value_is_quoted_by_its_ends(key: str, tmp_path: Path) -> None:
    """Before, a 100 kB value made a 100 kB error line."""
    problem = only({key: "x" * 100_000 + "!"}, tmp_path)
    assert len(problem.message) < 500 and "...x" in problem.message


def test_a_working_directory_deleted_under_the_process_fails_only_relative_paths(
    tmp_path: Path,
) -> None:
    """Every command was an internal error (FileNotFoundError), an absolute store too."""
    import subprocess
    import sys

    store = tmp_path / "store"

    def govkernel(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOVKERNEL_")}
        script = f'cd "$1" && rmdir "$1" && shift && exec {sys.executable} -m composition.cli "$@"'
        return subprocess.run(
            ["sh", "-c", script, "sh", str(tmp_path / "gone"), *args],
            env=env | {"GOVKERNEL_ACTOR": "operator"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    (tmp_path / "gone").mkdir()
    assert govkernel("--store", f"surrealkv://{store}", "demo").returncode == 0
    (tmp_path / "gone").mkdir()
    assert govkernel("--store", "memory://", "workflows").returncode == 0
    anchor = ("--store", f"surrealkv://{store}", "audit", "anchor", "--output", "rel.json")
    for args in (
        ("executions", "list"),
        ("--store", "surrealkv://rel", "executions", "list"),
        anchor,
    ):
        (tmp_path / "gone").mkdir()
        refused = govkernel(*args)
        assert refused.returncode == 2, refused.stderr
        assert "working directory, which no longer exists" in refused.stderr
    assert not (tmp_path / "rel").exists()


def test_a_long_config_path_is_quoted_cut(tmp_path: Path) -> None:
    found = only({CONFIG_ENV: "/nowhere" * 20_000}, tmp_path)
    assert "cannot be read (File name too long)" in str(found) and len(str(found)) < 400
