ALTER TABLE webhook_subscriptions DROP COLUMN form_token;
