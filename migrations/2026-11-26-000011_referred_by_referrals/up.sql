-- "Referred customers, most referrals first": the biggest referrers are mostly customers
-- nobody referred, so walking `customers_referrals_idx` in order skipped thousands of
-- them before finding a page of referred ones (1.6 ms per page view at a million
-- customers). This index holds just the referred customers, in that order.
CREATE INDEX customers_referred_referrals_idx
    ON customers (program_id, status, referrals_count DESC, id DESC)
    INCLUDE (referrer_id, approved)
    WHERE referrer_id IS NOT NULL;
