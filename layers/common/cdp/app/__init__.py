"""Use cases: conversation, temporary channels, account pool, jobs, alerts. They speak only to
cdp.ports and raise cdp.app.errors.ServiceError; no adapter, no protocol shapes."""
