//! The demo data set as plain values: who joined when, who referred whom, what was
//! clicked, booked and invited. Everything is drawn from one ChaCha stream seeded by
//! `--seed` (ChaCha's output is fixed by its specification, so a seed gives the same data
//! with any build), and nothing here touches the database, so the same seed always gives
//! the same plan.
//!
//! The shape follows what makes every screen show something: about 30% of customers are
//! referred, spread over the last year; referrers are chosen by preferential attachment
//! (a referral goes to someone in proportion to the referrals they already have, or now
//! and then to anyone earlier), which gives the few prolific referrers real programs
//! have. A referrer always joined before the customers they referred.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const FIRST_NAMES: [&str; 10] = [
    "Ada", "Grace", "Alan", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger",
];
pub const SURNAMES: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen",
    "Dijkstra",
];
/// Reserved names only (RFC 2606, RFC 6761): no seeded address can reach a real mailbox.
pub const DOMAINS: [&str; 8] = [
    "example.com",
    "example.org",
    "example.net",
    "acme.example",
    "globex.example",
    "initech.test",
    "umbrella.test",
    "hooli.example",
];
const REFERERS: [Option<&str>; 5] = [
    None,
    Some("https://mail.example.com/"),
    Some("https://social.example/feed"),
    Some("https://blog.example.org/tools-we-love"),
    Some("https://news.example.net/"),
];
const MESSAGES: [&str; 3] = [
    "I have been using this for months, thought you would like it too.",
    "Here is the link I told you about.",
    "Join with my link and we both get a reward!",
];
pub const FAILURE: &str = "550 5.1.1 Recipient address rejected: mailbox unavailable";

const REFERRED_SHARE: f64 = 0.3;
/// How often a referral follows the referrals already made (the rest go to anyone earlier).
const FOLLOW_POPULAR: f64 = 0.6;
const DELETED_SHARE: f64 = 0.01;
const UNAPPROVED_SHARE: f64 = 0.02;
const SPAN_DAYS: i64 = 365;
pub const KEY_LENGTH: usize = 10;
const KEY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Bounds on the rows besides customers, so that a million customers still seed quickly.
const MAX_REWARDS: f64 = 25_000.0;
const MAX_WELCOMES: f64 = 5_000.0;
const MAX_REFERRAL_CLICKS: f64 = 100_000.0;
const MAX_INVITES: usize = 3_000;
pub const REWARD_CENTS: i64 = 1_000;
pub const WELCOME_POINTS: i64 = 100;

/// One customer. Indexes into [`Plan::people`] name other customers.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    pub key: [u8; KEY_LENGTH],
    pub first: u8,
    pub last: u8,
    pub domain: u8,
    pub born: NaiveDate,
    pub created_at: DateTime<Utc>,
    pub referrer: Option<u32>,
    /// Active customers this one referred (what `referrals_count` holds).
    pub referrals: i32,
    /// Clicks on their default link.
    pub clicks: i64,
    pub approved: bool,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Person {
    pub fn key(&self) -> &str {
        // The alphabet is ASCII.
        std::str::from_utf8(&self.key).unwrap_or_default()
    }

    pub fn name(&self) -> &'static str {
        FIRST_NAMES[usize::from(self.first)]
    }

    pub fn surname(&self) -> &'static str {
        SURNAMES[usize::from(self.last)]
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Click {
    pub customer: u32,
    pub at: DateTime<Utc>,
    pub referer: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Booking {
    pub customer: u32,
    pub credit: bool,
    /// Hundredths for a currency, whole units otherwise.
    pub amount: i64,
    pub units: &'static str,
    pub is_currency: bool,
    pub note: String,
    pub at: DateTime<Utc>,
    /// The customer whose signup the entry follows from, written no earlier than them: the
    /// referred one for a reward, the last one rewarded for a payout, the customer for a
    /// welcome.
    pub follows: u32,
}

impl Booking {
    /// The amount as the ledger shows (and audits) it: `10.00` USD, `100` points.
    pub fn amount_display(&self) -> String {
        if self.is_currency {
            format!("{}.{:02}", self.amount / 100, self.amount % 100)
        } else {
            self.amount.to_string()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteStatus {
    Queued,
    Sent,
    Failed,
}

impl InviteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteStatus::Queued => "queued",
            InviteStatus::Sent => "sent",
            InviteStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedInvite {
    pub inviter: Option<u32>,
    pub email: String,
    pub name: String,
    pub message: Option<&'static str>,
    pub status: InviteStatus,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Customer numbers (`seed-{n}`) continue after this one.
    pub base: i64,
    pub people: Vec<Person>,
    pub clicks: Vec<Click>,
    pub bookings: Vec<Booking>,
    pub invites: Vec<PlannedInvite>,
}

impl Plan {
    /// The data set for `count` customers numbered from `base + 1`, ending at `now`.
    pub fn draw(seed: u64, base: i64, count: u32, now: DateTime<Utc>) -> Plan {
        // Another base (a second seed into the same program) draws other keys.
        let mut root = [0u8; 32];
        root[..8].copy_from_slice(&seed.to_le_bytes());
        root[8..16].copy_from_slice(&base.to_le_bytes());
        let mut master = ChaCha8Rng::from_seed(root);
        let mut stream = || ChaCha8Rng::seed_from_u64(master.gen());
        let (mut people_rng, mut graph_rng, mut click_rng, mut ledger_rng, mut invite_rng) =
            (stream(), stream(), stream(), stream(), stream());
        let mut people = draw_people(&mut people_rng, count, now);
        let endpoints = draw_referrals(&mut graph_rng, &mut people, now);
        let clicks = draw_clicks(&mut click_rng, &mut people, &endpoints, now);
        let bookings = draw_bookings(&mut ledger_rng, &people, now);
        let invites = draw_invites(&mut invite_rng, &people, &endpoints, base, now);
        Plan {
            base,
            people,
            clicks,
            bookings,
            invites,
        }
    }

    /// The customer's number: `seed-{number}` is their id, and it makes their email unique.
    pub fn number(&self, index: usize) -> i64 {
        self.base + index as i64 + 1
    }

    pub fn external_id(&self, index: usize) -> String {
        format!("seed-{}", self.number(index))
    }

    pub fn email(&self, index: usize) -> String {
        let person = &self.people[index];
        format!(
            "{}.{}@{}",
            person.name().to_lowercase(),
            self.number(index),
            DOMAINS[usize::from(person.domain)]
        )
    }
}

/// Customers in order of joining: creation times spread evenly over the last year,
/// strictly increasing, so a lower index always joined earlier.
fn draw_people(rng: &mut ChaCha8Rng, count: u32, now: DateTime<Utc>) -> Vec<Person> {
    let span = Duration::days(SPAN_DAYS).num_microseconds().unwrap_or(i64::MAX);
    let mut offsets: Vec<i64> = (0..count).map(|_| rng.gen_range(0..span)).collect();
    offsets.sort_unstable();
    for i in 1..offsets.len() {
        offsets[i] = offsets[i].max(offsets[i - 1] + 1);
    }
    let start = now - Duration::microseconds(span + i64::from(count));
    let born_first = NaiveDate::from_ymd_opt(1955, 1, 1).unwrap_or_default();
    offsets
        .into_iter()
        .map(|offset| {
            let mut key = [0u8; KEY_LENGTH];
            for byte in &mut key {
                *byte = KEY_ALPHABET[rng.gen_range(0..KEY_ALPHABET.len())];
            }
            Person {
                key,
                first: rng.gen_range(0..FIRST_NAMES.len() as u8),
                last: rng.gen_range(0..SURNAMES.len() as u8),
                domain: rng.gen_range(0..DOMAINS.len() as u8),
                born: born_first + Duration::days(rng.gen_range(0..18_250)),
                created_at: start + Duration::microseconds(offset),
                referrer: None,
                referrals: 0,
                clicks: 0,
                approved: !rng.gen_bool(UNAPPROVED_SHARE),
                deleted_at: None,
            }
        })
        .collect()
}

/// Picks the referred customers and their referrers, then deletes a few customers who
/// referred nobody. Returns one entry per referral, naming its referrer (so that a uniform
/// pick from it favours the prolific).
fn draw_referrals(rng: &mut ChaCha8Rng, people: &mut [Person], now: DateTime<Utc>) -> Vec<u32> {
    let count = people.len();
    let mut endpoints: Vec<u32> = Vec::new();
    if count >= 2 {
        let referred = ((count as f64) * REFERRED_SHARE).round() as usize;
        let mut chosen: Vec<usize> = index::sample(rng, count - 1, referred.min(count - 1))
            .into_iter()
            .map(|i| i + 1)
            .collect();
        chosen.sort_unstable();
        endpoints.reserve(chosen.len());
        for i in chosen {
            let referrer = if !endpoints.is_empty() && rng.gen_bool(FOLLOW_POPULAR) {
                endpoints[rng.gen_range(0..endpoints.len())]
            } else {
                rng.gen_range(0..i as u32)
            };
            endpoints.push(referrer);
            people[i].referrer = Some(referrer);
        }
    }
    let mut has_referred = vec![false; count];
    for &referrer in &endpoints {
        has_referred[referrer as usize] = true;
    }
    // At least one, so that the list of deleted customers has something to show.
    let candidates: Vec<usize> = (0..count).filter(|&i| !has_referred[i]).collect();
    let deleted = (((count as f64) * DELETED_SHARE).round() as usize)
        .max(1)
        .min(candidates.len());
    for pick in index::sample(rng, candidates.len(), deleted) {
        let person = &mut people[candidates[pick]];
        let lived = (now - person.created_at).num_seconds().max(1);
        person.deleted_at = Some(person.created_at + Duration::seconds(rng.gen_range(0..lived)));
    }
    for i in 0..count {
        if let (Some(referrer), None) = (people[i].referrer, people[i].deleted_at) {
            people[referrer as usize].referrals += 1;
        }
    }
    endpoints
}

/// A click on the referrer's link shortly before many of the referred signed up, and half
/// as many clicks that brought nobody.
fn draw_clicks(
    rng: &mut ChaCha8Rng,
    people: &mut [Person],
    endpoints: &[u32],
    now: DateTime<Utc>,
) -> Vec<Click> {
    let referred: Vec<usize> = (0..people.len())
        .filter(|&i| people[i].referrer.is_some())
        .collect();
    let share = (MAX_REFERRAL_CLICKS / referred.len().max(1) as f64).min(1.0);
    let mut clicks = Vec::new();
    for i in referred {
        if !rng.gen_bool(share) {
            continue;
        }
        let Some(referrer) = people[i].referrer else {
            continue;
        };
        let earliest = people[referrer as usize].created_at;
        let before = Duration::seconds(rng.gen_range(30..3 * 86_400));
        clicks.push(Click {
            customer: referrer,
            at: (people[i].created_at - before).max(earliest),
            referer: REFERERS[rng.gen_range(0..REFERERS.len())],
        });
    }
    let unconverted = clicks.len() / 2;
    for _ in 0..unconverted {
        let customer = endpoints[rng.gen_range(0..endpoints.len())];
        clicks.push(Click {
            customer,
            at: between(rng, people[customer as usize].created_at, now),
            referer: REFERERS[rng.gen_range(0..REFERERS.len())],
        });
    }
    clicks.sort_by_key(|click| click.at);
    for click in &clicks {
        people[click.customer as usize].clicks += 1;
    }
    clicks
}

/// Referral rewards (USD) for many referrals, payouts (debits) for some referrers with
/// enough balance, and welcome points for a few customers. A debit never exceeds the
/// balance before it.
fn draw_bookings(rng: &mut ChaCha8Rng, people: &[Person], now: DateTime<Utc>) -> Vec<Booking> {
    let referred: Vec<usize> = (0..people.len())
        .filter(|&i| people[i].referrer.is_some() && people[i].deleted_at.is_none())
        .collect();
    let reward_share = (MAX_REWARDS / referred.len().max(1) as f64).min(0.5);
    let mut bookings = Vec::new();
    // Per referrer: (balance in cents, time of the last reward, the last customer rewarded).
    let mut earned: std::collections::BTreeMap<u32, (i64, DateTime<Utc>, u32)> = Default::default();
    for i in referred {
        if !rng.gen_bool(reward_share) {
            continue;
        }
        let Some(referrer) = people[i].referrer else {
            continue;
        };
        let at = (people[i].created_at + Duration::minutes(rng.gen_range(5..72 * 60))).min(now);
        bookings.push(Booking {
            customer: referrer,
            credit: true,
            amount: REWARD_CENTS,
            units: "USD",
            is_currency: true,
            note: format!("Referral reward: {}", people[i].key()),
            at,
            follows: i as u32,
        });
        let entry = earned.entry(referrer).or_insert((0, at, 0));
        entry.0 += REWARD_CENTS;
        entry.1 = entry.1.max(at);
        entry.2 = entry.2.max(i as u32);
    }
    // The biggest earner is always paid out, so that the ledger shows a debit.
    let top = earned
        .iter()
        .max_by_key(|(_, (balance, _, _))| *balance)
        .map(|(&customer, _)| customer);
    for (&customer, &(balance, last, follows)) in &earned {
        if balance >= 3 * REWARD_CENTS && (Some(customer) == top || rng.gen_bool(0.3)) {
            bookings.push(Booking {
                customer,
                credit: false,
                amount: balance / 2 / REWARD_CENTS * REWARD_CENTS,
                units: "USD",
                is_currency: true,
                note: "Payout".to_string(),
                at: (last + Duration::hours(rng.gen_range(1..14 * 24))).min(now),
                follows,
            });
        }
    }
    let welcome_share = (MAX_WELCOMES / people.len().max(1) as f64).min(0.05);
    for (i, person) in people.iter().enumerate() {
        if person.deleted_at.is_none() && rng.gen_bool(welcome_share) {
            bookings.push(Booking {
                customer: i as u32,
                credit: true,
                amount: WELCOME_POINTS,
                units: "points",
                is_currency: false,
                note: "Welcome bonus".to_string(),
                at: (person.created_at + Duration::minutes(rng.gen_range(1..60))).min(now),
                follows: i as u32,
            });
        }
    }
    bookings.sort_by_key(|booking| booking.at);
    bookings
}

/// Invites in every status, mostly sent by referrers in their own name, a few by the
/// team; the first three are one of each status.
fn draw_invites(
    rng: &mut ChaCha8Rng,
    people: &[Person],
    endpoints: &[u32],
    base: i64,
    now: DateTime<Utc>,
) -> Vec<PlannedInvite> {
    let active: Vec<u32> = (0..people.len() as u32)
        .filter(|&i| people[i as usize].deleted_at.is_none())
        .collect();
    if active.is_empty() {
        return Vec::new();
    }
    let count = (people.len() / 10).clamp(3, MAX_INVITES);
    let mut invites: Vec<PlannedInvite> = (0..count)
        .map(|j| {
            let inviter = match rng.gen_range(0..10) {
                0 => None,
                1 | 2 => Some(active[rng.gen_range(0..active.len())]),
                _ if !endpoints.is_empty() => Some(endpoints[rng.gen_range(0..endpoints.len())]),
                _ => Some(active[rng.gen_range(0..active.len())]),
            };
            let since = inviter.map_or(now - Duration::days(SPAN_DAYS), |i| people[i as usize].created_at);
            let status = match j {
                0 => InviteStatus::Queued,
                1 => InviteStatus::Sent,
                2 => InviteStatus::Failed,
                _ => match rng.gen_range(0..20) {
                    0..=14 => InviteStatus::Sent,
                    15 | 16 => InviteStatus::Failed,
                    _ => InviteStatus::Queued,
                },
            };
            let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
            let last = SURNAMES[rng.gen_range(0..SURNAMES.len())];
            // Numbered like the customers, so no two invites of the program (pending ones
            // must differ) share an address, whichever seed made them.
            let number = base + j as i64 + 1;
            PlannedInvite {
                inviter,
                email: format!(
                    "{}.{}.{number}@{}",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    DOMAINS[rng.gen_range(0..DOMAINS.len())]
                ),
                name: format!("{first} {last}"),
                message: rng
                    .gen_bool(0.5)
                    .then(|| MESSAGES[rng.gen_range(0..MESSAGES.len())]),
                status,
                created_at: between(rng, since, now),
            }
        })
        .collect();
    invites.sort_by_key(|invite| invite.created_at);
    invites
}

/// A time between `from` and `until` (at `from` when they are not in order).
fn between(rng: &mut ChaCha8Rng, from: DateTime<Utc>, until: DateTime<Utc>) -> DateTime<Utc> {
    let span = (until - from).num_seconds();
    if span <= 0 {
        from
    } else {
        from + Duration::seconds(rng.gen_range(0..span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    #[test]
    fn the_same_seed_draws_the_same_plan_and_another_seed_another() {
        let plan = Plan::draw(1, 0, 500, now());
        assert_eq!(plan, Plan::draw(1, 0, 500, now()));
        let other = Plan::draw(2, 0, 500, now());
        assert_ne!(plan.people[0].key, other.people[0].key);
        // A second seed into the same program draws other keys.
        assert_ne!(plan.people[0].key, Plan::draw(1, 500, 500, now()).people[0].key);
    }

    #[test]
    fn referrers_joined_earlier_and_counts_are_the_active_referred() {
        for count in [10, 200, 5_000] {
            let plan = Plan::draw(7, 0, count, now());
            let mut counted = vec![0; plan.people.len()];
            for (i, person) in plan.people.iter().enumerate() {
                if i > 0 {
                    assert!(plan.people[i - 1].created_at < person.created_at);
                }
                assert!(person.created_at <= now() && person.created_at > now() - Duration::days(366));
                if let Some(referrer) = person.referrer {
                    let referrer = referrer as usize;
                    assert!(referrer < i);
                    assert!(plan.people[referrer].deleted_at.is_none(), "referrers stay");
                    if person.deleted_at.is_none() {
                        counted[referrer] += 1;
                    }
                }
            }
            let from_plan: Vec<i32> = plan.people.iter().map(|person| person.referrals).collect();
            assert_eq!(from_plan, counted);
            let referred = plan
                .people
                .iter()
                .filter(|person| person.referrer.is_some())
                .count();
            let share = referred as f64 / count as f64;
            assert!((0.25..=0.35).contains(&share), "{count}: {share}");
        }
    }

    #[test]
    fn tiny_counts_draw_without_failing() {
        for count in 0..12 {
            let plan = Plan::draw(5, 0, count, now());
            assert_eq!(plan.people.len(), count as usize);
            assert!(plan
                .people
                .iter()
                .enumerate()
                .all(|(i, p)| p.referrer.is_none_or(|r| (r as usize) < i)));
        }
    }

    #[test]
    fn a_few_customers_refer_many() {
        let plan = Plan::draw(3, 0, 20_000, now());
        let mut counts: Vec<i32> = plan.people.iter().map(|person| person.referrals).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let referrers = counts.iter().filter(|&&n| n > 0).count();
        let mean = f64::from(counts.iter().sum::<i32>()) / referrers as f64;
        assert!(
            f64::from(counts[0]) > 20.0 * mean,
            "top {} vs mean {mean}",
            counts[0]
        );
    }

    #[test]
    fn every_invite_status_and_no_debit_beyond_the_balance() {
        for seed in 0..20 {
            let plan = Plan::draw(seed, 0, 10, now());
            for status in [InviteStatus::Queued, InviteStatus::Sent, InviteStatus::Failed] {
                assert!(plan.invites.iter().any(|invite| invite.status == status));
            }
            assert!(plan.people.iter().any(|person| person.deleted_at.is_some()));
            assert!(plan.people.iter().any(|person| person.referrer.is_some()));
        }
        let plan = Plan::draw(1, 0, 50_000, now());
        let mut balances = std::collections::HashMap::new();
        for booking in &plan.bookings {
            let balance = balances.entry((booking.customer, booking.units)).or_insert(0);
            *balance += if booking.credit {
                booking.amount
            } else {
                -booking.amount
            };
            assert!(*balance >= 0);
        }
        assert!(plan.bookings.iter().any(|booking| !booking.credit));
        // The seed writes an entry with the customer it follows from, or later: a credit
        // for the referral it rewards, and a payout no earlier than the credits it pays.
        for debit in plan.bookings.iter().filter(|booking| !booking.credit) {
            assert!(plan
                .bookings
                .iter()
                .filter(|credit| credit.credit
                    && credit.customer == debit.customer
                    && credit.units == debit.units)
                .all(|credit| credit.follows <= debit.follows && credit.at <= debit.at));
        }
        for booking in &plan.bookings {
            let follows = &plan.people[booking.follows as usize];
            assert!(booking.follows >= booking.customer && follows.deleted_at.is_none());
            if booking.credit && booking.is_currency {
                assert_eq!(follows.referrer, Some(booking.customer));
            }
        }
        let referrers: std::collections::HashSet<u32> =
            plan.people.iter().filter_map(|person| person.referrer).collect();
        assert!(plan
            .clicks
            .iter()
            .all(|click| referrers.contains(&click.customer)));
    }

    #[test]
    fn addresses_are_reserved_names_and_unique() {
        let plan = Plan::draw(1, 0, 2_000, now());
        let emails: std::collections::HashSet<String> =
            (0..plan.people.len()).map(|i| plan.email(i)).collect();
        assert_eq!(emails.len(), plan.people.len());
        let reserved = |email: &str| {
            let domain = email.rsplit('@').next().unwrap_or_default();
            domain.starts_with("example.") || domain.ends_with(".example") || domain.ends_with(".test")
        };
        assert!(emails.iter().all(|email| reserved(email)));
        assert!(plan.invites.iter().all(|invite| reserved(&invite.email)));
    }
}
