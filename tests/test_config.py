"""Settings come from flags, then COLLAB_* variables, then defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from collab.auth import Authenticator
from collab.cli import build_parser, main
from collab.config import Settings, SettingsError, settings_from_namespace
from collab.store import create_store


def test_defaults_use_an_sqlite_file_under_data():
    settings = Settings.from_env({})
    assert settings.store_url == "sqlite:///data/collab.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_environment_variables_override_defaults_and_flags_override_both():
    env = {"COLLAB_PORT": "9100", "COLLAB_PING_INTERVAL_S": "7.5", "COLLAB_LOG_LEVEL": "debug"}
    from_env = Settings.from_env(env)
    assert (from_env.port, from_env.ping_interval_s, from_env.log_level) == (9100, 7.5, "debug")
    flags = build_parser().parse_args(["serve", "--port", "9200", "--ping-timeout-s", "3"])
    from_flags = settings_from_namespace(flags, env)
    assert (from_flags.port, from_flags.ping_interval_s, from_flags.ping_timeout_s) == (
        9200,
        7.5,
        3.0,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COLLAB_PORT": "eighty"}, "not a valid int"),
        ({"COLLAB_PORT": "70000"}, "port"),
        ({"COLLAB_LOG_LEVEL": "loud"}, "log_level"),
        ({"COLLAB_PING_INTERVAL_S": "5", "COLLAB_PING_TIMEOUT_S": "9"}, "ping_timeout_s"),
        ({"COLLAB_MAX_FRAME_BYTES": "0"}, "max_frame_bytes"),
        ({"COLLAB_AUTH_SECRET": "short"}, "32 bytes"),
        ({"COLLAB_MEMORY_TRIM_S": "-1"}, "memory_trim_s"),
        ({"COLLAB_MALLOC_ARENA_MAX": "-2"}, "malloc_arena_max"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_cli_reports_a_bad_setting_and_exits_with_2(capsys):
    assert main(["serve", "--port", "eighty"]) == 2
    assert "not a valid int" in capsys.readouterr().err


def test_python_dash_m_collab_lists_every_setting():
    result = subprocess.run(
        [sys.executable, "-m", "collab", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("--store-url", "--ping-interval-s", "--max-frame-bytes", "--log-level"):
        assert flag in result.stdout
    assert "COLLAB_STORE_URL" in result.stdout


def test_the_token_command_signs_a_token_for_the_configured_secret(capsys):
    secret = "a-secret-that-is-long-enough-for-hs256"
    code = main(["token", "--user", "ann", "--grant", "notes/*=write", "--auth-secret", secret])
    assert code == 0
    identity = Authenticator(secret).authenticate(capsys.readouterr().out.strip())
    assert identity.user == "ann" and identity.role_for("notes/x") == "write"


def test_the_token_command_signs_an_admin_token_that_may_revoke(capsys):
    secret = "a-secret-that-is-long-enough-for-hs256"
    code = main(["token", "--user", "ops", "--admin", "--auth-secret", secret])
    assert code == 0
    identity = Authenticator(secret).authenticate(capsys.readouterr().out.strip())
    assert identity.user == "ops" and identity.admin
    assert identity.role_for("notes/x") is None  # admin grants no document by itself


def test_the_token_command_wants_a_grant_or_admin(capsys):
    secret = "a-secret-that-is-long-enough-for-hs256"
    assert main(["token", "--user", "ops", "--auth-secret", secret]) == 2
    assert "--grant" in capsys.readouterr().err


def test_an_unsupported_store_url_is_refused():
    with pytest.raises(ValueError, match="unsupported store URL scheme 'postgres'"):
        create_store("postgres://localhost/db")


async def test_allowed_origins_limit_which_pages_may_open_websockets(start_server, settings):
    server = await start_server(settings.replace(allowed_origins="https://app.example.com"))
    url = f"ws://127.0.0.1:{server.port}/ws"
    allowed = await websocket_connect(
        HTTPRequest(url, headers={"Origin": "https://app.example.com"})
    )
    allowed.close()
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url, headers={"Origin": "https://evil.example"}))
    assert refused.value.code == 403


async def test_with_access_tokens_any_origin_may_connect_by_default(start_server, settings):
    # Editor apps are served from other origins than the server; the token is
    # the access control. (Open mode refuses other origins: test_security_origins.)
    server = await start_server(settings.replace(auth_secret="s" * 32))
    token = Authenticator("s" * 32).issue("ann", {"*": "write"})
    url = f"ws://127.0.0.1:{server.port}/yjs/doc?token={token}"
    ws = await websocket_connect(HTTPRequest(url, headers={"Origin": "https://elsewhere.example"}))
    ws.close()


def test_an_outbound_bound_that_a_sync_in_parts_would_trip_is_refused():
    with pytest.raises(SettingsError, match="outbound_queue_bytes"):
        Settings(outbound_queue_bytes=256 * 1024, sync_chunk_bytes=1024 * 1024)
    Settings(outbound_queue_bytes=3 * 1024 * 1024, sync_chunk_bytes=1024 * 1024)
