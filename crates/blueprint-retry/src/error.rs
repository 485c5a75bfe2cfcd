use std::fmt;
use std::time::Duration;

/// The call's deadline passed before it could finish; the attempt in flight, if any, was
/// abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    pub(crate) attempts: u32,
    pub(crate) budget: Option<Duration>,
}

impl DeadlineExceeded {
    /// How many attempts were started (0 when the deadline had passed before the first).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The layer's total time budget, if the deadline came from it rather than the caller.
    pub fn budget(&self) -> Option<Duration> {
        self.budget
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts == 0 {
            f.write_str("the call's deadline had passed before it started; nothing was sent")?;
        } else {
            write!(
                f,
                "the call's deadline passed during attempt {}",
                self.attempts
            )?;
        }
        if let Some(budget) = self.budget {
            write!(f, " (time budget {} ms)", budget.as_millis())?;
        }
        Ok(())
    }
}

impl std::error::Error for DeadlineExceeded {}
