"""Each security defence of docs/security.md removed in turn, in a scratch copy of HEAD: its test
must then fail. `make mutations` (about 3 minutes; not part of `make test`). Prints one line per
defence and exits 1 if a test still passes without its defence.

    python tests/support/security_mutations.py [PREFIX...]   # e.g. "5" for the bounded-work ones
"""

import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
C = "layers/common/cdp/"
M = [
 ("1 open API", C+"entry/cli.py", "if settings.open_api and not settings.demo and not settings.ALLOW_OPEN_API:", "if False:",
  ["tests/e2e/test_startup.py::test_open_api_beyond_loopback_refuses_to_start_naming_the_fix"]),
 ("2 GUILD_ID only", C+"app/channels.py", 'if str(channel.get("guild_id") or "") != guild:', "if False:",
  ["tests/e2e/test_bad_inputs.py", "-k", "outside_the_guild"]),
 ("3 private channels", C+"app/channels.py", "            if members is not None:\n                overwrites = private_overwrites(s.GUILD_ID", "            if False:\n                overwrites = private_overwrites(s.GUILD_ID",
  ["tests/e2e/test_private_channels.py::test_temporary_channel_is_private_to_bot_account_and_coze"]),
 ("4 admin keys", C+"entry/api/common.py", "        if self.level == ADMIN and admin:", "        if False:",
  ["tests/e2e/test_keys_and_logs.py::test_a_chat_key_never_reads_status_nor_deletes_channels"]),
 ("5a prompt parts", C+"domain/prompt.py", "    if len(prompt) > max_parts * limit:\n        raise too_long\n    parts = split_for_discord(prompt, coze_bot_id, limit)\n    if len(parts) > max_parts:\n        raise too_long", "    parts = split_for_discord(prompt, coze_bot_id, limit)",
  ["tests/integration/test_bounds.py::test_a_prompt_over_prompt_max_parts_is_400_and_nothing_is_posted"]),
 ("5b body size", C+"entry/api/common.py", "    if length.isdigit() and int(length) > limit:\n        raise BodyTooLarge(limit)\n    body = bytearray()\n    async for chunk in request.stream():\n        body += chunk\n        if len(body) > limit:\n            raise BodyTooLarge(limit)", "    body = bytearray()\n    async for chunk in request.stream():\n        body += chunk",
  ["tests/integration/test_bounds.py::test_bodies_over_the_limit_are_413_before_parsing"]),
 ("6 SSRF", C+"adapters/media.py", "    if not all(map(is_public_address, addresses)):", "    if False:",
  ["tests/unit/test_bounds.py", "-k", "inner_address_among"]),
 ("7 redaction", C+"entry/logs.py", "        return self.redactor.text(self.inner.format(record))", "        return self.inner.format(record)",
  ["tests/unit/test_logs.py::test_lambda_powertools_keeps_tracebacks_and_redacts_every_logger"]),
 ("8 pinned deps", "pyproject.toml", '"starlette>=0.49.1",', '"starlette>=0.40",',
  ["tests/unit/test_dependencies.py::test_advisory_floors"]),
]


def main() -> int:
    wanted = tuple(sys.argv[1:]) or ("",)
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="cdp-mutations-") as tmp:
        root = pathlib.Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(root), "HEAD"], check=True,
                       capture_output=True)
        try:
            for name, f, old, new, args in [m for m in M if m[0].startswith(wanted)]:
                p = root / f
                src = p.read_text()
                assert old in src, f"{name}: the defence's code moved; update this script"
                p.write_text(src.replace(old, new, 1))
                try:
                    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                                       cwd=root, capture_output=True, text=True, timeout=900,
                                       env={"PATH": "/usr/bin:/bin", "HOME": str(pathlib.Path.home()),
                                            "PYTHONPATH": str(root / "layers/common")})
                finally:
                    p.write_text(src)
                tail = ([ln for ln in r.stdout.splitlines() if " in " in ln and ("passed" in ln or "failed" in ln)]
                        or ["?"])[-1]
                caught = r.returncode != 0
                survivors += not caught
                print(f"{'caught ' if caught else 'MISSED '} {name}: {tail}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(root)], capture_output=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
