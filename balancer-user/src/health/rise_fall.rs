//! The rise/fall hysteresis every check result goes through.

/// Pure up/down state machine: starts down, goes up after `rise` consecutive
/// passes, goes down after `fall` consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Result of the last check; meaningless while `streak` is 0.
    last_passed: bool,
    /// How many checks in a row had the result `last_passed`.
    streak: u32,
}

impl RiseFall {
    /// A machine that starts down. `rise` and `fall` of 0 count as 1.
    pub fn new(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            last_passed: false,
            streak: 0,
        }
    }

    /// A machine that starts in the given state.
    pub fn starting(rise: u32, fall: u32, up: bool) -> RiseFall {
        RiseFall {
            up,
            ..RiseFall::new(rise, fall)
        }
    }

    /// Records one check result; returns the new state when it changed.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if self.streak > 0 && self.last_passed == passed {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.last_passed = passed;
            self.streak = 1;
        }
        let flips = if self.up {
            !passed && self.streak >= self.fall
        } else {
            passed && self.streak >= self.rise
        };
        if flips {
            self.up = !self.up;
            Some(self.up)
        } else {
            None
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// How many checks in a row had the same result as the last one (0 before any check).
    pub fn consecutive(&self) -> u32 {
        self.streak
    }

    /// The last result recorded, `None` before any check.
    #[cfg(test)]
    pub fn last_passed(&self) -> Option<bool> {
        (self.streak > 0).then_some(self.last_passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `results` ('P' pass, 'F' fail) and returns the transitions as a
    /// string of the same length: 'U' went up, 'D' went down, '.' unchanged.
    fn run(rise: u32, fall: u32, results: &str) -> String {
        let mut rf = RiseFall::new(rise, fall);
        results
            .chars()
            .map(|c| match rf.record(c == 'P') {
                Some(true) => 'U',
                Some(false) => 'D',
                None => '.',
            })
            .collect()
    }

    #[test]
    fn table() {
        let cases = [
            // (rise, fall, results, transitions)
            (1, 1, "PFPF", "UDUD"),
            (1, 1, "FFFP", "...U"),
            (2, 3, "PP", ".U"),
            (2, 3, "PFPP", "...U"),
            (2, 3, "PPFFF", ".U..D"),
            (2, 3, "PPFFPFFF", ".U.....D"),
            (2, 3, "PPPPPP", ".U...."),
            (2, 3, "FFFFFF", "......"),
            (2, 3, "PPFFFFPP", ".U..D..U"),
            (3, 1, "PPPFPPP", "..UD..U"),
            (0, 0, "PF", "UD"),
        ];
        for (rise, fall, results, want) in cases {
            assert_eq!(
                run(rise, fall, results),
                want,
                "rise={rise} fall={fall} results={results}"
            );
        }
    }

    #[test]
    fn starts_down_and_counts_streaks() {
        let mut rf = RiseFall::new(2, 2);
        assert!(!rf.is_up());
        assert_eq!((rf.consecutive(), rf.last_passed()), (0, None));
        rf.record(true);
        assert_eq!((rf.consecutive(), rf.last_passed()), (1, Some(true)));
        assert_eq!(rf.record(true), Some(true));
        assert!(rf.is_up());
        rf.record(true);
        assert_eq!(rf.consecutive(), 3);
        rf.record(false);
        assert_eq!((rf.consecutive(), rf.last_passed()), (1, Some(false)));
        assert!(rf.is_up());
        assert_eq!(rf.record(false), Some(false));
        assert!(!rf.is_up());
    }
}
