"""`cdp doctor` checks that the CDP bot may make temporary channels private (TEMP_CHANNEL_PRIVATE):
Manage Roles (or Administrator) and the permissions it grants, against the fake Discord."""

from __future__ import annotations

from cdp.entry import doctor
from cdp.sim.core import BOT_ROLE_PERMS

from tests.ops.test_doctor import checks_for, fake, problems

__all__ = ["fake"]

MANAGE_ROLES = 1 << 28


async def test_private_channels_need_manage_roles(fake, tmp_path):
    checks = await checks_for(fake, cwd=tmp_path)
    assert checks["private channels"].state == doctor.OK
    fake.set_role_permissions(fake.bot_role_id(), int(BOT_ROLE_PERMS) & ~MANAGE_ROLES)
    checks = await checks_for(fake, cwd=tmp_path)
    assert problems(checks) == ["private channels"]
    assert "Manage Roles" in checks["private channels"].detail
    assert "TEMP_CHANNEL_PRIVATE=0" in checks["private channels"].fix
    assert f"permissions={doctor.INVITE_PERMISSIONS}" in checks["private channels"].fix
    assert doctor.INVITE_PERMISSIONS & MANAGE_ROLES
    # the old behaviour needs no Manage Roles; neither does DEFAULT_CHANNEL_ENABLE (no temporary channels)
    assert problems(await checks_for(fake, cwd=tmp_path, TEMP_CHANNEL_PRIVATE="0")) == []
    checks = await checks_for(fake, cwd=tmp_path, DEFAULT_CHANNEL_ENABLE="1")
    assert problems(checks) == [] and checks["private channels"].state == doctor.SKIP
    fake.set_role_permissions(fake.bot_role_id(), 1 << 3)  # Administrator implies it
    assert problems(await checks_for(fake, cwd=tmp_path)) == []
