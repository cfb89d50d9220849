-- Sign-in budgets (`domain::team::sign_in`): failures are counted per account (the typed
-- email), per client address and per device cookie. A typed email is cut to 254
-- characters before it is stored; the CHECK keeps it so.
ALTER TABLE login_failures ADD COLUMN device TEXT;
CREATE INDEX login_failures_device_idx ON login_failures (device, created_at) WHERE device IS NOT NULL;
DELETE FROM login_failures WHERE char_length(email) > 254;
ALTER TABLE login_failures ADD CONSTRAINT login_failures_email_length CHECK (char_length(email) <= 254);
