// Mirrors migrations/ (what `diesel print-schema` prints for them).

diesel::table! {
    api_tokens (id) {
        id -> Int8,
        program_id -> Int8,
        name -> Text,
        token_hash -> Text,
        token_prefix -> Text,
        created_by -> Nullable<Int8>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        form_token -> Nullable<Uuid>,
        read_after_lsn -> Nullable<Int8>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Int8,
        program_id -> Nullable<Int8>,
        actor_member_id -> Nullable<Int8>,
        actor_token_id -> Nullable<Int8>,
        actor_label -> Text,
        action -> Text,
        subject_type -> Text,
        subject_id -> Nullable<Text>,
        customer_id -> Nullable<Int8>,
        before -> Nullable<Jsonb>,
        after -> Nullable<Jsonb>,
        address -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    balance_transactions (id) {
        id -> Int8,
        program_id -> Int8,
        customer_id -> Int8,
        kind -> Text,
        amount -> Numeric,
        amount_units -> Text,
        is_currency -> Bool,
        note -> Nullable<Text>,
        actor_member_id -> Nullable<Int8>,
        actor_token_id -> Nullable<Int8>,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    customer_balances (customer_id, amount_units, is_currency) {
        customer_id -> Int8,
        amount_units -> Text,
        is_currency -> Bool,
        balance -> Numeric,
        credited -> Numeric,
        entries -> Int8,
    }
}

diesel::table! {
    customer_tallies (program_id, status, referred, slot) {
        program_id -> Int8,
        status -> Text,
        referred -> Bool,
        slot -> Int2,
        customers -> Int8,
        changes -> Int8,
    }
}

diesel::table! {
    customer_imports (id) {
        id -> Int8,
        program_id -> Int8,
        member_id -> Nullable<Int8>,
        file_name -> Text,
        content -> Bytea,
        mapping -> Nullable<Jsonb>,
        mode -> Text,
        policy -> Text,
        status -> Text,
        report -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        job_id -> Nullable<Int8>,
    }
}

diesel::table! {
    customers (id) {
        id -> Int8,
        program_id -> Int8,
        external_id -> Text,
        key -> Text,
        email -> Nullable<Text>,
        name -> Nullable<Text>,
        surname -> Nullable<Text>,
        metadata -> Jsonb,
        custom_fields -> Jsonb,
        status -> Text,
        approved -> Bool,
        referrer_id -> Nullable<Int8>,
        referrals_count -> Int4,
        deleted_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    invites (id) {
        id -> Int8,
        program_id -> Int8,
        customer_id -> Nullable<Int8>,
        email -> Text,
        name -> Nullable<Text>,
        personalization -> Jsonb,
        status -> Text,
        last_error -> Nullable<Text>,
        sent_at -> Nullable<Timestamptz>,
        actor_member_id -> Nullable<Int8>,
        actor_token_id -> Nullable<Int8>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    job_skipped_rows (id) {
        id -> Int8,
        job_id -> Int8,
        line -> Nullable<Int8>,
        customer_key -> Nullable<Text>,
        email -> Nullable<Text>,
        reason -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    jobs (id) {
        id -> Int8,
        program_id -> Int8,
        kind -> Text,
        status -> Text,
        actor_member_id -> Nullable<Int8>,
        actor_label -> Text,
        actor_address -> Nullable<Text>,
        params -> Jsonb,
        form_token -> Nullable<Uuid>,
        total -> Int8,
        done -> Int8,
        skipped -> Int8,
        cursor -> Nullable<Jsonb>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamptz>,
        failures -> Int4,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    job_phases (job_id) {
        job_id -> Int8,
        step -> Int4,
        steps -> Int4,
        label -> Text,
        done -> Int8,
        total -> Int8,
        started_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    login_failures (id) {
        id -> Int8,
        email -> Text,
        address -> Text,
        created_at -> Timestamptz,
        device -> Nullable<Text>,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> Int8,
        invite_id -> Nullable<Int8>,
        recipient -> Text,
        subject -> Text,
        body_text -> Text,
        body_html -> Text,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        sent_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    maintenance_runs (task) {
        task -> Text,
        last_run_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    rate_windows (scope, key, window_start) {
        scope -> Text,
        key -> Text,
        window_start -> Timestamptz,
        hits -> Int4,
    }
}

diesel::table! {
    one_time_tokens (id) {
        id -> Int8,
        token_hash -> Text,
        purpose -> Text,
        member_id -> Nullable<Int8>,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    programs (id) {
        id -> Int8,
        slug -> Text,
        name -> Text,
        referral_base_url -> Text,
        link_param -> Text,
        require_approval -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        rewards_max_referrals_per_hour -> Int4,
        rewards_support_approval_limit -> Nullable<Numeric>,
    }
}

diesel::table! {
    referral_clicks (id) {
        id -> Int8,
        link_id -> Int8,
        referer -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    referral_links (id) {
        id -> Int8,
        program_id -> Int8,
        customer_id -> Int8,
        code -> Text,
        is_default -> Bool,
        clicks -> Int8,
        created_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    referral_standings (customer_id) {
        customer_id -> Int8,
        program_id -> Int8,
        status -> Text,
        referrals_count -> Int4,
        referrer_id -> Nullable<Int8>,
        approved -> Bool,
    }
}

diesel::table! {
    retired_keys (program_id, key) {
        program_id -> Int8,
        key -> Text,
        customer_id -> Int8,
        retired_at -> Timestamptz,
    }
}

diesel::table! {
    reward_rules (id) {
        id -> Int8,
        program_id -> Int8,
        name -> Text,
        trigger -> Text,
        sale_scope -> Nullable<Text>,
        sale_count -> Nullable<Int4>,
        within_days -> Nullable<Int4>,
        min_sale_amount -> Nullable<Numeric>,
        product_type -> Nullable<Text>,
        amount_kind -> Text,
        referrer_amount -> Nullable<Numeric>,
        friend_amount -> Nullable<Numeric>,
        amount_units -> Text,
        is_currency -> Bool,
        max_reward -> Nullable<Numeric>,
        limit_per_referrer -> Nullable<Int4>,
        limit_per_referrer_month -> Nullable<Int4>,
        budget -> Nullable<Numeric>,
        hold_days -> Int4,
        needs_approval -> Bool,
        enabled -> Bool,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reward_tallies (program_id, rule_id, status, flagged, owed, slot) {
        program_id -> Int8,
        rule_id -> Int8,
        status -> Text,
        flagged -> Bool,
        owed -> Bool,
        slot -> Int2,
        rewards -> Int8,
        amount -> Numeric,
    }
}

diesel::table! {
    rewards (id) {
        id -> Int8,
        program_id -> Int8,
        rule_id -> Int8,
        rule_snapshot -> Jsonb,
        beneficiary_id -> Int8,
        role -> Text,
        referrer_id -> Int8,
        friend_id -> Int8,
        transaction_id -> Nullable<Int8>,
        event_key -> Text,
        amount -> Numeric,
        amount_units -> Text,
        is_currency -> Bool,
        status -> Text,
        hold_until -> Timestamptz,
        needs_approval -> Bool,
        flags -> Array<Text>,
        credit_entry_id -> Nullable<Int8>,
        credited_at -> Nullable<Timestamptz>,
        decided_by_member_id -> Nullable<Int8>,
        decided_by_token_id -> Nullable<Int8>,
        decided_at -> Nullable<Timestamptz>,
        deny_reason -> Nullable<Text>,
        void_reason -> Nullable<Text>,
        reversal -> Nullable<Text>,
        reversal_owed -> Nullable<Numeric>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        member_id -> Nullable<Int8>,
        state -> Jsonb,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    team_members (id) {
        id -> Int8,
        email -> Text,
        name -> Text,
        role -> Text,
        password_hash -> Nullable<Text>,
        disabled -> Bool,
        last_sign_in_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    transactions (id) {
        id -> Int8,
        program_id -> Int8,
        customer_id -> Int8,
        key -> Text,
        amount -> Numeric,
        amount_units -> Text,
        action -> Text,
        status -> Text,
        product_id -> Nullable<Text>,
        product_type -> Nullable<Text>,
        rewardable -> Bool,
        reward_notes -> Jsonb,
        request_hash -> Text,
        actor_member_id -> Nullable<Int8>,
        actor_token_id -> Nullable<Int8>,
        archived_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Int8,
        subscription_id -> Int8,
        event_id -> Uuid,
        event -> Text,
        customer_id -> Nullable<Int8>,
        outcome -> Text,
        status_code -> Nullable<Int4>,
        duration_ms -> Int4,
        response -> Nullable<Text>,
        error -> Nullable<Text>,
        next_retry_at -> Nullable<Timestamptz>,
        attempted_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        event_id -> Uuid,
        subscription_id -> Int8,
        event -> Text,
        customer_id -> Nullable<Int8>,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        claimed_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Uuid,
        program_id -> Int8,
        event -> Text,
        customer_id -> Nullable<Int8>,
        data -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_subscriptions (id) {
        id -> Int8,
        program_id -> Int8,
        key -> Text,
        name -> Text,
        url -> Text,
        all_events -> Bool,
        events -> Array<Text>,
        is_active -> Bool,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_until -> Nullable<Timestamptz>,
        failing_since -> Nullable<Timestamptz>,
        auto_disabled_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        form_token -> Nullable<Uuid>,
    }
}

diesel::joinable!(api_tokens -> programs (program_id));
diesel::joinable!(api_tokens -> team_members (created_by));
diesel::joinable!(customer_imports -> jobs (job_id));
diesel::joinable!(customer_imports -> programs (program_id));
diesel::joinable!(customer_tallies -> programs (program_id));
diesel::joinable!(customers -> programs (program_id));
diesel::joinable!(invites -> customers (customer_id));
diesel::joinable!(job_phases -> jobs (job_id));
diesel::joinable!(job_skipped_rows -> jobs (job_id));
diesel::joinable!(jobs -> programs (program_id));
diesel::joinable!(mail_outbox -> invites (invite_id));
diesel::joinable!(referral_clicks -> referral_links (link_id));
diesel::joinable!(reward_rules -> programs (program_id));
diesel::joinable!(rewards -> programs (program_id));
diesel::joinable!(transactions -> programs (program_id));
diesel::joinable!(sessions -> team_members (member_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::joinable!(webhook_attempts -> webhook_subscriptions (subscription_id));
diesel::joinable!(webhook_deliveries -> webhook_events (event_id));
diesel::joinable!(webhook_deliveries -> webhook_subscriptions (subscription_id));
diesel::joinable!(webhook_events -> programs (program_id));
diesel::joinable!(webhook_subscriptions -> programs (program_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_tokens,
    audit_events,
    balance_transactions,
    customer_balances,
    customer_imports,
    customer_tallies,
    customers,
    invites,
    job_phases,
    job_skipped_rows,
    jobs,
    login_failures,
    mail_outbox,
    maintenance_runs,
    one_time_tokens,
    programs,
    rate_windows,
    referral_clicks,
    referral_links,
    referral_standings,
    retired_keys,
    reward_rules,
    reward_tallies,
    rewards,
    sessions,
    team_members,
    transactions,
    webhook_attempts,
    webhook_deliveries,
    webhook_events,
    webhook_subscriptions,
);
