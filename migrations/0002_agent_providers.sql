-- The LLM providers a tenant's agent may use (names from llm.providers), in
-- the order they are tried; empty means every configured provider. A tenant
-- that must stay on-prem lists only its on-prem providers, so that its
-- prompts never fall back to an external API (konstruct agent set
-- --providers). The column is the agent row's, under the agents table's
-- Row-Level Security policy like every other column of it.

-- +goose Up
ALTER TABLE agents ADD COLUMN providers text[] NOT NULL DEFAULT '{}'
    CHECK (array_position(providers, '') IS NULL AND array_position(providers, NULL) IS NULL);

-- +goose Down
ALTER TABLE agents DROP COLUMN IF EXISTS providers;
