-- Refused if, meanwhile, an event came to name a row that is gone (removed by hand).
ALTER TABLE audit_events
    ADD CONSTRAINT audit_events_program_id_fkey FOREIGN KEY (program_id) REFERENCES programs (id),
    ADD CONSTRAINT audit_events_actor_member_id_fkey FOREIGN KEY (actor_member_id) REFERENCES team_members (id),
    ADD CONSTRAINT audit_events_actor_token_id_fkey FOREIGN KEY (actor_token_id) REFERENCES api_tokens (id),
    ADD CONSTRAINT audit_events_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);
