-- Konstruct schema: tenants and their agents, Slack workspaces, replies.
--
-- Isolation model (read before changing anything here):
--
-- * Every tenant-owned table (tenants included: a tenant sees only its own
--   row) has ENABLE and FORCE ROW LEVEL SECURITY and a policy
--   "tenant_isolation" whose USING and WITH CHECK compare the row's tenant
--   with the transaction-local setting app.current_tenant. The store sets it
--   with set_config('app.current_tenant', $1, true) inside each transaction;
--   unset (or empty) means NULL, which matches no row.
--
-- * The runtime role (the daemon's database.url) is neither owner, superuser
--   nor BYPASSRLS, so these policies always apply to it.
--
-- * The few cross-tenant reads the gateway and the admin CLI need go through
--   SECURITY DEFINER functions named konstruct_*: owned by the role that ran
--   this migration (the owner), pinned search_path, EXECUTE revoked from
--   PUBLIC and granted to the runtime role alone by migrations.Up, each
--   returning only the columns its caller needs.
--
-- * FORCE applies RLS to the owner too, so the definer functions need a way
--   through. We give the owner one extra policy, "owner_read": FOR SELECT
--   TO CURRENT_USER (the owner, as this migration runs as the owner) USING
--   (true). It is read-only: every write, including ones the admin CLI makes
--   for any tenant, still happens in a tenant-scoped transaction. We chose a
--   role-bound policy over an "app.bypass" setting because any role can set
--   a custom GUC, so a setting could never be a boundary; a policy bound to a
--   role can only be used by that role (and by code it owns, i.e. these
--   functions).

-- +goose Up
CREATE TABLE tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name       text NOT NULL CHECK (name <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name <> ''),
    role         text NOT NULL DEFAULT '',
    persona      text NOT NULL DEFAULT '',
    instructions text NOT NULL DEFAULT '',
    model        text NOT NULL DEFAULT '',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- One active agent per tenant; store.SetAgent upserts on it.
CREATE UNIQUE INDEX agents_one_active ON agents (tenant_id) WHERE active;

CREATE TABLE workspaces (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    team_id       text NOT NULL UNIQUE CHECK (team_id <> ''),
    team_name     text NOT NULL DEFAULT '',
    enterprise_id text NOT NULL DEFAULT '',
    app_id        text NOT NULL DEFAULT '',
    bot_user_id   text NOT NULL DEFAULT '',
    bot_id        text NOT NULL DEFAULT '',
    -- AES-256-GCM (nonce || ciphertext) under the key named by key_id.
    -- Cleared when the workspace is removed: its row stays for history only.
    app_token_enc bytea,
    bot_token_enc bytea,
    key_id        text,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'removed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspaces_tokens_unless_removed CHECK (
        status = 'removed'
        OR (app_token_enc IS NOT NULL AND bot_token_enc IS NOT NULL AND key_id IS NOT NULL)
    ),
    -- Target of replies' composite key: a reply's workspace is its tenant's.
    CONSTRAINT workspaces_tenant_id_id UNIQUE (tenant_id, id)
);

CREATE TABLE replies (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workspace_id      uuid,
    team_id           text NOT NULL DEFAULT '',
    channel_id        text NOT NULL DEFAULT '',
    thread_ts         text NOT NULL DEFAULT '',
    message_ts        text NOT NULL DEFAULT '',
    event_id          text NOT NULL CHECK (event_id <> ''),
    model             text NOT NULL DEFAULT '',
    provider          text NOT NULL DEFAULT '',
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    ttft_ms           bigint NOT NULL DEFAULT 0,
    latency_ms        bigint NOT NULL DEFAULT 0,
    outcome           text NOT NULL DEFAULT '',
    error             text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- A retried task upserts its row instead of adding a second one.
    CONSTRAINT replies_tenant_event UNIQUE (tenant_id, event_id),
    CONSTRAINT replies_workspace_fk FOREIGN KEY (tenant_id, workspace_id)
        REFERENCES workspaces (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX replies_tenant_created ON replies (tenant_id, created_at DESC);

-- Row-Level Security: see the header.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
CREATE POLICY owner_read ON tenants FOR SELECT TO CURRENT_USER USING (true);

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
CREATE POLICY owner_read ON agents FOR SELECT TO CURRENT_USER USING (true);

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workspaces
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
CREATE POLICY owner_read ON workspaces FOR SELECT TO CURRENT_USER USING (true);

ALTER TABLE replies ENABLE ROW LEVEL SECURITY;
ALTER TABLE replies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON replies
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
CREATE POLICY owner_read ON replies FOR SELECT TO CURRENT_USER USING (true);

-- A running gateway LISTENs on konstruct_workspaces and reconciles its
-- sockets when a workspace is added, removed, re-keyed or changes status.
-- The payload is the team id only.
-- +goose StatementBegin
CREATE FUNCTION konstruct_notify_workspaces() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('konstruct_workspaces', OLD.team_id);
    ELSE
        PERFORM pg_notify('konstruct_workspaces', NEW.team_id);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_notify_workspaces() FROM PUBLIC;
CREATE TRIGGER workspaces_notify
    AFTER INSERT OR DELETE OR UPDATE OF status, app_token_enc, bot_token_enc, bot_user_id, tenant_id
    ON workspaces FOR EACH ROW EXECUTE FUNCTION konstruct_notify_workspaces();

-- The definer functions: the only cross-tenant path. See the header.

-- Gateway: every active workspace with its encrypted tokens.
-- +goose StatementBegin
CREATE FUNCTION konstruct_active_workspaces()
RETURNS TABLE (
    id uuid, tenant_id uuid, team_id text, team_name text, enterprise_id text,
    app_id text, bot_user_id text, bot_id text,
    app_token_enc bytea, bot_token_enc bytea, key_id text,
    status text, created_at timestamptz, updated_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT w.id, w.tenant_id, w.team_id, w.team_name, w.enterprise_id,
           w.app_id, w.bot_user_id, w.bot_id,
           w.app_token_enc, w.bot_token_enc, w.key_id,
           w.status, w.created_at, w.updated_at
    FROM public.workspaces w
    WHERE w.status = 'active'
    ORDER BY w.created_at, w.team_id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_active_workspaces() FROM PUBLIC;

-- Router: which tenant an event's team belongs to (no tokens).
-- +goose StatementBegin
CREATE FUNCTION konstruct_workspace_for_team(p_team_id text)
RETURNS TABLE (
    tenant_id uuid, id uuid, team_id text, bot_user_id text, bot_id text, status text
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT w.tenant_id, w.id, w.team_id, w.bot_user_id, w.bot_id, w.status
    FROM public.workspaces w
    WHERE w.team_id = p_team_id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_workspace_for_team(text) FROM PUBLIC;

-- Admin CLI: --tenant ID|SLUG.
-- +goose StatementBegin
CREATE FUNCTION konstruct_tenant(p_id_or_slug text)
RETURNS TABLE (id uuid, slug text, name text, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT t.id, t.slug, t.name, t.created_at
    FROM public.tenants t
    WHERE t.slug = lower(p_id_or_slug) OR t.id::text = lower(p_id_or_slug)
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_tenant(text) FROM PUBLIC;

-- Admin CLI: tenant list.
-- +goose StatementBegin
CREATE FUNCTION konstruct_tenants()
RETURNS TABLE (id uuid, slug text, name text, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT t.id, t.slug, t.name, t.created_at
    FROM public.tenants t
    ORDER BY t.created_at, t.slug
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_tenants() FROM PUBLIC;

-- Admin CLI: workspace list (never tokens).
-- +goose StatementBegin
CREATE FUNCTION konstruct_workspaces()
RETURNS TABLE (
    id uuid, tenant_id uuid, team_id text, team_name text, enterprise_id text,
    app_id text, bot_user_id text, bot_id text, status text,
    created_at timestamptz, updated_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT w.id, w.tenant_id, w.team_id, w.team_name, w.enterprise_id,
           w.app_id, w.bot_user_id, w.bot_id, w.status, w.created_at, w.updated_at
    FROM public.workspaces w
    ORDER BY w.created_at, w.team_id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_workspaces() FROM PUBLIC;

-- +goose Down
DROP FUNCTION IF EXISTS konstruct_workspaces();
DROP FUNCTION IF EXISTS konstruct_tenants();
DROP FUNCTION IF EXISTS konstruct_tenant(text);
DROP FUNCTION IF EXISTS konstruct_workspace_for_team(text);
DROP FUNCTION IF EXISTS konstruct_active_workspaces();
DROP TABLE IF EXISTS replies;
DROP TABLE IF EXISTS workspaces;
DROP FUNCTION IF EXISTS konstruct_notify_workspaces();
DROP TABLE IF EXISTS agents;
DROP TABLE IF EXISTS tenants;
