//! [`Delivery`]: how a message toward a client may be treated by a full queue. One class for
//! every queue the server keeps toward clients: a stream's outbound slot
//! ([`crate::session`]) and each caption subscriber's queue ([`crate::captions`]).
//!
//! Replaceable messages (interim results, heartbeats) keep only the latest: a newer one
//! replaces a waiting one, and a final replaces waiting interims of its utterance (and of
//! earlier ones). Everything else must be delivered, in order.

/// The delivery class of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// An interim result of this utterance: replaceable by newer messages.
    Interim(u64),
    /// Progress only: replaceable.
    Heartbeat,
    /// The final result of this utterance: must be delivered.
    Final(u64),
    /// A voice activity event: must be delivered.
    Event,
    /// A caption source's description (a state change): must be delivered.
    State,
}

impl Delivery {
    /// Whether a queue may drop this message when a newer one makes it obsolete.
    pub fn is_replaceable(self) -> bool {
        matches!(self, Self::Interim(_) | Self::Heartbeat)
    }

    /// Whether a message of class `self` makes a waiting message of class `waiting`
    /// obsolete (it is then dropped, never sent): any replaceable message by a newer
    /// replaceable one, a heartbeat by a final, an interim by the final of its utterance or
    /// a later one.
    pub fn supersedes(self, waiting: Self) -> bool {
        match (waiting, self) {
            (Self::Interim(_) | Self::Heartbeat, newer) if newer.is_replaceable() => true,
            (Self::Heartbeat, Self::Final(_)) => true,
            (Self::Interim(waiting), Self::Final(index)) => waiting <= index,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Delivery::{self, Event, Final, Heartbeat, Interim, State};

    #[test]
    fn replaceable_messages_keep_only_the_latest() {
        assert!(Interim(3).supersedes(Interim(2)) && Heartbeat.supersedes(Interim(2)));
        assert!(Interim(1).supersedes(Heartbeat));
        assert!(Final(2).supersedes(Interim(2)) && Final(2).supersedes(Interim(1)));
        assert!(
            !Final(2).supersedes(Interim(3)),
            "a later utterance's interim stays"
        );
        assert!(Final(0).supersedes(Heartbeat));
        for must in [Final(1), Event, State] {
            assert!(!must.is_replaceable());
            for newer in [Interim(9), Heartbeat, Final(9), Event, State] {
                assert!(!newer.supersedes(must), "{newer:?} must not drop {must:?}");
            }
        }
        assert!(!Event.supersedes(Heartbeat) && !State.supersedes(Interim(0)));
        let all: [Delivery; 5] = [Interim(0), Heartbeat, Final(0), Event, State];
        assert_eq!(all.iter().filter(|d| d.is_replaceable()).count(), 2);
    }
}
