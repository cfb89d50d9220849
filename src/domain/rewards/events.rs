//! The `reward.*` webhooks: each change of a reward announces the reward as it is stored
//! now, in the `GET /v1/rewards` shape ([`super::view::RewardView`]), in the change's own
//! database transaction.

use diesel::prelude::*;

use crate::domain::webhooks::{self, Emitted, Event};
use crate::error::Error;

use super::{lookup, view, Reward};

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
    let items = lookup::of_ids(conn, &ids)?
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
