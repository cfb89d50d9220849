-- The webhook form's one-time token: the same form sent twice (a double click, a re-post)
-- makes one subscription, as `api_tokens.form_token` does for API tokens.
ALTER TABLE webhook_subscriptions ADD COLUMN form_token UUID,
    ADD CONSTRAINT webhook_subscriptions_form_token_key UNIQUE (form_token);
