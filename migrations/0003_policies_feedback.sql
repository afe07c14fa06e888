-- Each tenant decides who its AI employee answers, where and how much, and
-- sees how it does (issue 15):
--
-- * policies: one row per tenant that set one (konstruct policy set,
--   konstruct budget set); a tenant without a row has the default policy
--   (every channel, everyone, DMs on, threads followed for
--   threads.engaged_ttl, no token budget), so the store reads a missing row
--   as that. Empty lists mean "all" (channels, users) or "none"
--   (deny_channels). follow_ttl_s 0 means threads.engaged_ttl.
-- * feedback: one 👍/👎 per person per answer, changed by clicking the
--   other button. An answer is named by the post it replies to (team,
--   channel, post_ts), as the reply's state and task are.
-- * replies gains who asked (user_id), the question's ts (post_ts, which
--   feedback joins on) and the time from the question to the final answer
--   (answer_ms); refused questions (over a budget or a rate limit) get
--   rows too, with outcome 'refused', so that usage counts every question.
--
-- Both tables are tenant tables like the others: ENABLE and FORCE
-- ROW LEVEL SECURITY, the tenant_isolation policy and the owner's
-- owner_read (see 0001_schema.sql's header).
--
-- A running daemon LISTENs on konstruct_policies (payload: the tenant id)
-- and drops its cached policy of that tenant, so that a change acts within
-- seconds of the command's exit.

-- +goose Up
CREATE TABLE policies (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    channels         text[] NOT NULL DEFAULT '{}',
    deny_channels    text[] NOT NULL DEFAULT '{}',
    users            text[] NOT NULL DEFAULT '{}',
    dms              boolean NOT NULL DEFAULT true,
    follow_threads   text NOT NULL DEFAULT 'auto' CHECK (follow_threads IN ('auto', 'mention', 'off')),
    follow_ttl_s     integer NOT NULL DEFAULT 0 CHECK (follow_ttl_s >= 0),
    tokens_per_day   bigint NOT NULL DEFAULT 0 CHECK (tokens_per_day >= 0),
    tokens_per_month bigint NOT NULL DEFAULT 0 CHECK (tokens_per_month >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (array_position(channels, '') IS NULL AND array_position(channels, NULL) IS NULL),
    CHECK (array_position(deny_channels, '') IS NULL AND array_position(deny_channels, NULL) IS NULL),
    CHECK (array_position(users, '') IS NULL AND array_position(users, NULL) IS NULL)
);

CREATE TABLE feedback (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    team_id    text NOT NULL CHECK (team_id <> ''),
    channel_id text NOT NULL CHECK (channel_id <> ''),
    post_ts    text NOT NULL CHECK (post_ts <> ''),
    user_id    text NOT NULL CHECK (user_id <> ''),
    vote       text NOT NULL CHECK (vote IN ('up', 'down')),
    clicked_at timestamptz NOT NULL DEFAULT now(), -- Slack's action_ts: the later click holds
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, team_id, channel_id, post_ts, user_id)
);

ALTER TABLE replies
    ADD COLUMN user_id   text NOT NULL DEFAULT '',
    ADD COLUMN post_ts   text NOT NULL DEFAULT '',
    ADD COLUMN answer_ms bigint NOT NULL DEFAULT 0;

ALTER TABLE policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON policies
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
CREATE POLICY owner_read ON policies FOR SELECT TO CURRENT_USER USING (true);

ALTER TABLE feedback ENABLE ROW LEVEL SECURITY;
ALTER TABLE feedback FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON feedback
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
CREATE POLICY owner_read ON feedback FOR SELECT TO CURRENT_USER USING (true);

-- +goose StatementBegin
CREATE FUNCTION konstruct_notify_policies() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('konstruct_policies', OLD.tenant_id::text);
    ELSE
        PERFORM pg_notify('konstruct_policies', NEW.tenant_id::text);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION konstruct_notify_policies() FROM PUBLIC;
CREATE TRIGGER policies_notify
    AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION konstruct_notify_policies();

-- +goose Down
DROP TABLE IF EXISTS feedback;
DROP TABLE IF EXISTS policies;
DROP FUNCTION IF EXISTS konstruct_notify_policies();
ALTER TABLE replies DROP COLUMN IF EXISTS user_id, DROP COLUMN IF EXISTS post_ts, DROP COLUMN IF EXISTS answer_ms;
