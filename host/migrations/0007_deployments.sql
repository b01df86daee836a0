-- Every version that started running on a host of the deployment, by whom
-- and from where: the fleet deploys only the newest recorded version of a
-- plugin, so an announcement on NATS that no host recorded, or an old one
-- replayed, deploys nothing.
CREATE TABLE deployments (
    id           bigserial PRIMARY KEY,
    plugin       text NOT NULL,
    hash         text NOT NULL,
    version      text NOT NULL,
    source       text NOT NULL CHECK (source IN ('upload', 'folder', 'rollback', 'rebuild')),
    deployed_by  text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployments_plugin ON deployments (plugin, id DESC);
