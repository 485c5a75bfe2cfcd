//! The label sets of the metrics.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};

/// `integration="…"`, and one more label whose value is known when the code is written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Labels {
    pub(crate) integration: Arc<str>,
    pub(crate) extra: Option<(&'static str, &'static str)>,
}

impl Labels {
    pub(crate) fn new(integration: &Arc<str>) -> Self {
        Labels {
            integration: Arc::clone(integration),
            extra: None,
        }
    }

    pub(crate) fn with(integration: &Arc<str>, key: &'static str, value: &'static str) -> Self {
        Labels {
            integration: Arc::clone(integration),
            extra: Some((key, value)),
        }
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        ("integration", &*self.integration).encode(encoder.encode_label())?;
        if let Some(extra) = self.extra {
            extra.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}
