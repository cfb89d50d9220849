//! The `reward.*` webhooks: each change of a reward announces the reward as it is stored
//! now, in the `GET /v1/rewards` shape ([`super::view::RewardView`]), in the change's own
//! database transaction.

use diesel::prelude::*;

use crate::domain::webhooks::{self, Emitted, Event};
use crate::error::Error;

use super::lookup::{self, RewardLine};
use super::{view, Reward};

/// Emits `event` once for each of `rewards` (changed just now, in the caller's
/// transaction). Programs without an active subscription cost one query and no JSON.
pub fn announce(conn: &mut PgConnection, event: Event, rewards: &[Reward]) -> Result<(), Error> {
    announce_ids(
        conn,
        event,
        rewards.iter().map(|reward| (reward.program_id, reward.id)),
    )
}

/// [`announce`] for rewards known by `(program id, reward id)`.
pub fn announce_ids(
    conn: &mut PgConnection,
    event: Event,
    rewards: impl IntoIterator<Item = (i64, i64)>,
) -> Result<(), Error> {
    let rewards: Vec<(i64, i64)> = rewards.into_iter().collect();
    if rewards.is_empty() {
        return Ok(());
    }
    let mut programs: Vec<i64> = rewards.iter().map(|(program, _)| *program).collect();
    programs.sort_unstable();
    programs.dedup();
    let listening = webhooks::listening_programs(conn, &programs)?;
    let ids: Vec<i64> = rewards
        .iter()
        .filter(|(program, _)| listening.contains(program))
        .map(|(_, id)| *id)
        .collect();
    let lines = lookup::of_ids(conn, &ids)?;
    emit_lines(conn, event, &lines)
}

/// Emits `event` once for each of `lines`, rewards of one program created just now whose
/// stored rows and keys the caller holds (a rule firing), so they are not read again.
/// `listening`: whether the program has an active subscription, when the caller knows.
pub fn announce_lines(
    conn: &mut PgConnection,
    event: Event,
    lines: &[RewardLine],
    listening: Option<bool>,
) -> Result<(), Error> {
    let Some(first) = lines.first() else {
        return Ok(());
    };
    let listening = match listening {
        Some(known) => known,
        None => webhooks::has_subscriptions(conn, first.reward.program_id)?,
    };
    if !listening {
        return Ok(());
    }
    emit_lines(conn, event, lines)
}

fn emit_lines(conn: &mut PgConnection, event: Event, lines: &[RewardLine]) -> Result<(), Error> {
    let items = lines
        .iter()
        .map(|line| {
            Ok(Emitted {
                program_id: line.reward.program_id,
                customer_id: Some(line.reward.beneficiary_id),
                data: serde_json::to_value(view::reward_line(line))
                    .map_err(|error| Error::Internal(error.into()))?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    webhooks::emit_many(conn, event, &items)
}
