"""Organizations and members: roles, invitations, the last owner, tenant isolation."""

import asyncio
from collections.abc import Callable
from datetime import datetime

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from tests.fixtures.apps import client_from, started
from tests.fixtures.identity import (
    PASSWORD,
    Account,
    add_member,
    create_api_key,
    login,
    login_into,
    register,
)
from tollway.accounts.tasks import purge_expired_invitations
from tollway.audit.models import AuditEntry
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import outbox
from tollway.kit.sweeps import SweepContext


def members_url(account: Account) -> str:
    return f"/api/v1/organizations/{account.organization_id}/members"


async def add(
    client: httpx.AsyncClient, owner: Account, email: str, role: str = "member"
) -> httpx.Response:
    return await client.post(
        members_url(owner), json={"email": email, "role": role}, headers=owner.headers
    )


async def accept(client: httpx.AsyncClient, account: Account, token: str) -> httpx.Response:
    return await client.post(
        "/api/v1/invitations/accept", json={"token": token}, headers=account.headers
    )


class TestOrganization:
    async def test_members_and_keys_of_the_organization_see_it_others_get_404(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client, organization_name="Alice Tools")
        bob = await register(client)
        url = f"/api/v1/organizations/{alice.organization_id}"
        mine = await client.get(url, headers=alice.headers)
        assert mine.status_code == 200
        assert mine.json()["name"] == "Alice Tools"
        key = await create_api_key(client, alice)
        assert (
            await client.get(url, headers={"Authorization": f"Bearer {key}"})
        ).status_code == 200
        for path in (url, f"{url}/members", "/api/v1/organizations/org_nonexistent"):
            response = await client.get(path, headers=bob.headers)
            assert response.status_code == 404, path
            assert response.json()["code"] == "not_found"


class TestMembers:
    async def test_an_existing_password_account_is_invited_and_joins_when_it_accepts(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        alice = await register(client, organization_name="Alice Tools")
        carol = await register(client, name="Carol")
        listed = await client.get(members_url(alice), headers=alice.headers)
        assert [(m["user_id"], m["role"]) for m in listed.json()["items"]] == [
            (alice.user_id, "owner")
        ]
        added = await add(client, alice, carol.email.upper(), "billing")
        assert added.status_code == 201
        # A password registration never proved the mailbox: Carol gets a token to it.
        assert added.json()["status"] == "invited"
        assert added.json()["member"] is None
        invitation = added.json()["invitation"]
        assert (invitation["email"], invitation["role"]) == (carol.email, "billing")
        assert invitation["token"].startswith("twi_")
        assert invitation["accept_url"].endswith(f"?token={invitation['token']}")
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert carol.user_id not in {m["user_id"] for m in listed["items"]}
        assert [item["email"] for item in listed["invitations"]] == [carol.email]
        not_yet = await client.post(
            "/api/v1/auth/login",
            json={
                "email": carol.email,
                "password": PASSWORD,
                "organization_id": alice.organization_id,
            },
        )
        assert not_yet.status_code == 404
        twice = await add(client, alice, carol.email)
        assert twice.status_code == 409
        assert twice.json()["code"] == "already_invited"
        async with database.transaction(write=False) as session:
            invited_events = await outbox.list_events(
                session, event_type="member.invited", organization_id=alice.organization_id
            )
        assert [(e.payload["email"], e.payload["token"]) for e in invited_events] == [
            (carol.email, invitation["token"])
        ]

        accepted = await accept(client, carol, invitation["token"])
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["role"] == "billing"
        carol_in_alice = await login_into(client, carol, alice.organization_id)
        me = await client.get("/api/v1/auth/me", headers=carol_in_alice.headers)
        assert me.json()["role"] == "billing"
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert {(m["user_id"], m["role"], m["name"]) for m in listed["items"]} == {
            (alice.user_id, "owner", None),
            (carol.user_id, "billing", "Carol"),
        }
        assert listed["invitations"] == []
        again = await add(client, alice, carol.email)
        assert again.status_code == 409
        assert again.json()["code"] == "already_member"
        async with database.transaction(write=False) as session:
            events = await outbox.list_events(
                session, event_type="member.added", organization_id=alice.organization_id
            )
        assert [event.payload["user_id"] for event in events] == [carol.user_id]

    async def test_an_address_registered_by_a_squatter_joins_only_the_token_holder(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        # Mallory registers the colleague's address before Alice adds it.
        mallory = await register(client, email="victim@company.example")
        invited = await add(client, alice, "victim@company.example", "admin")
        assert invited.status_code == 201
        assert invited.json()["status"] == "invited"
        token = invited.json()["invitation"]["token"]
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert mallory.user_id not in {m["user_id"] for m in listed["items"]}
        refused = await client.post(
            "/api/v1/auth/login",
            json={
                "email": mallory.email,
                "password": PASSWORD,
                "organization_id": alice.organization_id,
            },
        )
        assert refused.status_code == 404
        # The token went to the mailbox; its real owner accepts with another account.
        victim = await register(client, email="victim@home.example")
        assert (await accept(client, victim, token)).status_code == 200
        spent = await accept(client, mallory, token)
        assert spent.status_code == 404
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert {(m["user_id"], m["role"]) for m in listed["items"]} == {
            (alice.user_id, "owner"),
            (victim.user_id, "admin"),
        }

    async def test_an_unknown_email_is_invited_and_joins_by_accepting_the_token(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        alice = await register(client, organization_name="Alice Tools")
        invited = await add(client, alice, "dave@example.com", "admin")
        assert invited.status_code == 201
        assert invited.json()["status"] == "invited"
        invitation = invited.json()["invitation"]
        assert invitation["id"].startswith("invite_")
        assert invitation["role"] == "admin"
        token = invitation["token"]
        assert token.startswith("twi_")
        assert invitation["accept_url"] == (
            f"http://127.0.0.1:8000/dashboard/invitations/accept?token={token}"
        )
        twice = await add(client, alice, "dave@example.com")
        assert twice.status_code == 409
        assert twice.json()["code"] == "already_invited"
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert [item["email"] for item in listed["invitations"]] == ["dave@example.com"]
        assert "token" not in listed["invitations"][0]
        async with database.transaction(write=False) as session:
            events = await outbox.list_events(
                session, event_type="member.invited", organization_id=alice.organization_id
            )
        # What the operator's mailer needs to write to the invited address.
        [payload] = [event.payload for event in events]
        assert datetime.fromisoformat(payload.pop("expires_at")) == datetime.fromisoformat(
            invitation["expires_at"]
        )
        assert payload == {
            "invitation_id": invitation["id"],
            "email": "dave@example.com",
            "role": "admin",
            "organization_name": "Alice Tools",
            "token": token,
            "accept_url": invitation["accept_url"],
        }

        dave = await register(client, email="dave@example.com")
        accepted = await accept(client, dave, token)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["organization"]["id"] == alice.organization_id
        assert accepted.json()["role"] == "admin"
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert listed["invitations"] == []
        assert {(m["user_id"], m["role"]) for m in listed["items"]} == {
            (alice.user_id, "owner"),
            (dave.user_id, "admin"),
        }
        # Dave still lands in his own organization; he can log into Alice's.
        assert dave.organization_id != alice.organization_id
        await login_into(client, dave, alice.organization_id)
        async with database.transaction(write=False) as session:
            joined = list(
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.action == "member.joined")
                    )
                ).scalars()
            )
        assert [
            (entry.target, entry.organization_id, entry.details["via"]) for entry in joined
        ] == [(dave.user_id, alice.organization_id, "token")]

    async def test_registering_the_invited_email_with_a_password_joins_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        await add(client, alice, "victim@company.example", "admin")
        # Anyone can register any address with a password: that proves no mailbox.
        mallory = await register(client, email="victim@company.example")
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert mallory.user_id not in {m["user_id"] for m in listed["items"]}
        assert [item["email"] for item in listed["invitations"]] == ["victim@company.example"]
        refused = await client.post(
            "/api/v1/auth/login",
            json={
                "email": mallory.email,
                "password": PASSWORD,
                "organization_id": alice.organization_id,
            },
        )
        assert refused.status_code == 404

    async def test_any_logged_in_account_may_accept_with_the_token(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        token = (await add(client, alice, "frank@work.example", "billing")).json()["invitation"][
            "token"
        ]
        # The token proves control of the invited mailbox; Frank uses his older account.
        frank = await register(client, email="frank@home.example")
        accepted = await accept(client, frank, token)
        assert accepted.status_code == 200
        frank_in_alice = await login_into(client, frank, alice.organization_id)
        me = await client.get("/api/v1/auth/me", headers=frank_in_alice.headers)
        assert me.json()["role"] == "billing"

    async def test_a_token_works_once_and_only_for_its_invitation(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        token = (await add(client, alice, "gail@example.com")).json()["invitation"]["token"]
        gail = await register(client, email="gail@example.com")
        other = await register(client)
        for made_up in ("twi_made-up", token[:-1], token.upper()):
            response = await accept(client, gail, made_up)
            assert response.status_code == 404
            assert response.json()["code"] == "invitation_not_found"
        assert (await accept(client, gail, token)).status_code == 200
        again = await accept(client, other, token)
        assert again.status_code == 404
        assert again.json()["code"] == "invitation_not_found"

    async def test_an_existing_member_cannot_accept_again(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        hank = await register(client)
        await add_member(client, alice, hank, "member")
        token = (await add(client, alice, "hank.other@example.com", "admin")).json()["invitation"][
            "token"
        ]
        refused = await accept(client, hank, token)
        assert refused.status_code == 409
        assert refused.json()["code"] == "already_member"
        owner = await accept(client, alice, token)
        assert owner.status_code == 409
        # Nothing was spent: the invitation is still there for someone else.
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert [item["email"] for item in listed["invitations"]] == ["hank.other@example.com"]

    async def test_accepting_needs_a_logged_in_user(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        token = (await add(client, alice, "ida@example.com")).json()["invitation"]["token"]
        anonymous = await client.post("/api/v1/invitations/accept", json={"token": token})
        assert anonymous.status_code == 401
        ida = await register(client, email="ida@example.com")
        key = await create_api_key(client, ida)
        by_key = await client.post(
            "/api/v1/invitations/accept",
            json={"token": token},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert by_key.status_code == 403
        assert by_key.json()["code"] == "user_required"
        empty = await client.post(
            "/api/v1/invitations/accept", json={"token": ""}, headers=ida.headers
        )
        assert empty.status_code == 422

    async def test_an_expired_invitation_is_not_accepted_and_is_swept(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        alice = await register(client)
        token = (await add(client, alice, "late@example.com", "admin")).json()["invitation"][
            "token"
        ]
        clock.advance(days=14, seconds=1)
        alice = await login(client, alice)  # the first access token has long expired
        context = SweepContext(database=database, clock=clock, settings=app.state.settings)
        late = await register(client, email="late@example.com")
        expired = await accept(client, late, token)
        assert expired.status_code == 404
        assert expired.json()["code"] == "invitation_not_found"
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert late.user_id not in {m["user_id"] for m in listed["items"]}
        assert await purge_expired_invitations(context) == 1
        assert await purge_expired_invitations(context) == 0
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert listed["invitations"] == []

    async def test_an_invitation_can_be_withdrawn(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        invitation = (await add(client, alice, "erin@example.com")).json()["invitation"]
        withdrawn = await client.delete(
            f"{members_url(alice)}/{invitation['id']}", headers=alice.headers
        )
        assert withdrawn.status_code == 204
        erin = await register(client, email="erin@example.com")
        refused = await accept(client, erin, invitation["token"])
        assert refused.status_code == 404
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert erin.user_id not in {m["user_id"] for m in listed["items"]}

    async def test_only_owners_and_admins_manage_members(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        roles = {}
        for role in ("admin", "billing", "member"):
            user = await register(client)
            await add_member(client, alice, user, role)
            roles[role] = await login_into(client, user, alice.organization_id)
        outsider = await register(client)
        for role in ("billing", "member"):
            refused = await add(client, roles[role], outsider.email)
            assert refused.status_code == 403, role
            assert refused.json()["code"] == "insufficient_role"
            # They may still see who is in the organization.
            listed = await client.get(members_url(roles[role]), headers=roles[role].headers)
            assert listed.status_code == 200
        admin = roles["admin"]
        assert (await add(client, admin, outsider.email, "member")).status_code == 201
        no_owner = await add(client, admin, "frank@example.com", "owner")
        assert no_owner.status_code == 403
        promote_self = await client.patch(
            f"{members_url(admin)}/{admin.user_id}", json={"role": "owner"}, headers=admin.headers
        )
        assert promote_self.status_code == 403
        remove_owner = await client.delete(
            f"{members_url(admin)}/{alice.user_id}", headers=admin.headers
        )
        assert remove_owner.status_code == 403
        key = await create_api_key(client, alice)
        by_key = await client.post(
            members_url(alice),
            json={"email": "gina@example.com"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert by_key.status_code == 403

    async def test_the_last_owner_cannot_be_demoted_or_removed(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        alice = await register(client)
        demote = await client.patch(
            f"{members_url(alice)}/{alice.user_id}", json={"role": "admin"}, headers=alice.headers
        )
        assert demote.status_code == 409
        assert demote.json()["code"] == "last_owner"
        leave = await client.delete(f"{members_url(alice)}/{alice.user_id}", headers=alice.headers)
        assert leave.status_code == 409
        assert leave.json()["code"] == "last_owner"

        hank = await register(client)
        await add_member(client, alice, hank, "owner")
        demoted = await client.patch(
            f"{members_url(alice)}/{alice.user_id}", json={"role": "admin"}, headers=alice.headers
        )
        assert demoted.status_code == 200
        assert demoted.json()["role"] == "admin"
        async with database.transaction(write=False) as session:
            changes = list(
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.action == "member.role_changed")
                    )
                ).scalars()
            )
        assert [(c.target, c.details) for c in changes] == [
            (alice.user_id, {"from": "owner", "to": "admin"})
        ]

    async def test_a_removed_member_loses_the_organization(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        ivan = await register(client)
        await add_member(client, alice, ivan)
        ivan_in_alice = await login_into(client, ivan, alice.organization_id)
        removed = await client.delete(f"{members_url(alice)}/{ivan.user_id}", headers=alice.headers)
        assert removed.status_code == 204
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": ivan_in_alice.refresh_token}
        )
        assert refreshed.status_code == 401
        gone = await client.delete(f"{members_url(alice)}/{ivan.user_id}", headers=alice.headers)
        assert gone.status_code == 404

    async def test_a_role_change_reaches_an_open_dashboard_session_within_a_second(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        alice = await register(client)
        judy = await register(client)
        await add_member(client, alice, judy, "admin")
        transport = httpx.ASGITransport(app=app)  # the same app, another browser
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
            opened = await browser.post(
                "/api/v1/auth/session",
                json={
                    "email": judy.email,
                    "password": PASSWORD,
                    "organization_id": alice.organization_id,
                },
            )
            assert opened.json()["role"] == "admin"
            assert (await browser.get("/api/v1/auth/me")).json()["role"] == "admin"
            await client.patch(
                f"{members_url(alice)}/{judy.user_id}",
                json={"role": "member"},
                headers=alice.headers,
            )
            clock.advance(seconds=1)
            me = await browser.get("/api/v1/auth/me")
            assert me.json()["role"] == "member"
            assert "members:manage" not in me.json()["scopes"]

    async def test_another_organization_gets_404_for_members(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        bob = await register(client)
        url = members_url(alice)
        for response in (
            await client.get(url, headers=bob.headers),
            await client.post(url, json={"email": "x@example.com"}, headers=bob.headers),
            await client.patch(
                f"{url}/{alice.user_id}", json={"role": "member"}, headers=bob.headers
            ),
            await client.delete(f"{url}/{alice.user_id}", headers=bob.headers),
        ):
            assert response.status_code == 404
            assert response.json()["code"] == "not_found"

    async def test_an_unknown_role_is_a_422(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        response = await add(client, alice, "kim@example.com", "superuser")
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"


class TestConcurrency:
    async def test_two_owners_demoting_each_other_at_once_leave_one_owner(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        bob = await register(client)
        await add_member(client, alice, bob, "owner")
        bob_in_alice = await login_into(client, bob, alice.organization_id)
        results = await asyncio.gather(
            client.patch(
                f"{members_url(alice)}/{bob.user_id}", json={"role": "admin"}, headers=alice.headers
            ),
            client.patch(
                f"{members_url(alice)}/{alice.user_id}",
                json={"role": "admin"},
                headers=bob_in_alice.headers,
            ),
        )
        assert sorted(response.status_code for response in results) == [200, 403]
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert [m["role"] for m in listed["items"]].count("owner") == 1

    async def test_one_token_accepted_twice_at_once_makes_one_member(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        token = (await add(client, alice, "twice@example.com")).json()["invitation"]["token"]
        first, second = await register(client), await register(client)
        results = await asyncio.gather(accept(client, first, token), accept(client, second, token))
        assert sorted(response.status_code for response in results) == [200, 404]
        listed = (await client.get(members_url(alice), headers=alice.headers)).json()
        assert len(listed["items"]) == 2
        assert listed["invitations"] == []


class TestCurrentRole:
    """Access tokens carry a role for 15 minutes; authorization uses the current one."""

    async def judy_as_admin(self, client: httpx.AsyncClient) -> tuple[Account, Account]:
        alice = await register(client)
        judy = await register(client)
        await add_member(client, alice, judy, "admin")
        return alice, await login_into(client, judy, alice.organization_id)

    async def test_a_removed_admins_access_token_is_refused_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        alice, judy = await self.judy_as_admin(client)
        assert (await client.get(members_url(alice), headers=judy.headers)).status_code == 200
        removed = await client.delete(f"{members_url(alice)}/{judy.user_id}", headers=alice.headers)
        assert removed.status_code == 204
        for response in (
            await client.get(members_url(alice), headers=judy.headers),
            await client.get(
                f"/api/v1/organizations/{alice.organization_id}", headers=judy.headers
            ),
            await client.post("/api/v1/auth/keys", json={"name": "backdoor"}, headers=judy.headers),
            await client.post(
                "/api/v1/billing/payment-methods",
                json={
                    "card_number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2030,
                    "cvc": "123",
                },
                headers=judy.headers,
            ),
        ):
            assert (response.status_code, response.json()["code"]) == (401, "invalid_token")

    async def test_a_demoted_admins_token_has_the_new_role_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        alice, judy = await self.judy_as_admin(client)
        demoted = await client.patch(
            f"{members_url(alice)}/{judy.user_id}", json={"role": "member"}, headers=alice.headers
        )
        assert demoted.status_code == 200, demoted.text
        me = (await client.get("/api/v1/auth/me", headers=judy.headers)).json()
        assert me["role"] == "member"
        assert "keys:manage" not in me["scopes"]
        key = await client.post(
            "/api/v1/auth/keys",
            json={"name": "all", "scopes": ["keys:manage", "members:manage"]},
            headers=judy.headers,
        )
        assert (key.status_code, key.json()["code"]) == (403, "insufficient_scope")
        invite = await client.post(
            members_url(alice),
            json={"email": "x@example.com", "role": "admin"},
            headers=judy.headers,
        )
        assert (invite.status_code, invite.json()["code"]) == (403, "insufficient_role")

    async def test_another_process_sees_a_removal_within_a_second(
        self, client: httpx.AsyncClient, app_factory: Callable[..., FastAPI], clock: ManualClock
    ) -> None:
        alice, judy = await self.judy_as_admin(client)
        async with started(app_factory) as other, client_from(other) as elsewhere:
            assert (
                await elsewhere.get(members_url(alice), headers=judy.headers)
            ).status_code == 200
            await client.delete(f"{members_url(alice)}/{judy.user_id}", headers=alice.headers)
            clock.advance(seconds=1)
            refused = await elsewhere.get(members_url(alice), headers=judy.headers)
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")

    async def test_a_key_cannot_grant_more_than_its_creators_current_role(
        self, client: httpx.AsyncClient
    ) -> None:
        alice, judy = await self.judy_as_admin(client)
        scopes = ["keys:manage", "members:manage", "usage:read"]
        key = await create_api_key(client, judy, scopes=scopes)
        await client.patch(
            f"{members_url(alice)}/{judy.user_id}", json={"role": "member"}, headers=alice.headers
        )
        escalated = await client.post(
            "/api/v1/auth/keys",
            json={"name": "forever", "scopes": scopes},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert (escalated.status_code, escalated.json()["code"]) == (403, "insufficient_scope")
        assert escalated.json()["required_scopes"] == ["keys:manage", "members:manage"]
        narrow = await client.post(
            "/api/v1/auth/keys",
            json={"name": "reader", "scopes": ["usage:read"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert narrow.status_code == 201, narrow.text
