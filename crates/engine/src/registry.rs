//! The connector types this process offers, by type name.

use std::collections::BTreeMap;
use std::sync::Arc;

use etl_model::{Connector, ConnectorSpec};

use crate::error::{EngineError, EngineResult};

#[derive(Clone, Default)]
pub struct Registry {
    connectors: BTreeMap<&'static str, Arc<dyn Connector>>,
}

impl Registry {
    pub fn new(connectors: impl IntoIterator<Item = Arc<dyn Connector>>) -> Registry {
        Registry {
            connectors: connectors
                .into_iter()
                .map(|c| (c.spec().type_name, c))
                .collect(),
        }
    }

    pub fn get(&self, type_name: &str) -> EngineResult<&Arc<dyn Connector>> {
        self.connectors.get(type_name.trim().to_ascii_lowercase().as_str()).ok_or_else(|| {
            let known: Vec<_> = self.connectors.keys().copied().collect();
            let hint = etl_model::nearest(type_name, known.iter().copied())
                .map(|n| format!("did you mean '{n}'? "))
                .unwrap_or_default();
            EngineError::invalid(format!(
                "unknown connection type '{type_name}'; {hint}known types: {} (see 'list connection-types')",
                known.join(", ")
            ))
        })
    }

    pub fn spec(&self, type_name: &str) -> Option<&'static ConnectorSpec> {
        self.connectors.get(type_name).map(|c| c.spec())
    }

    pub fn specs(&self) -> impl Iterator<Item = &'static ConnectorSpec> + '_ {
        self.connectors.values().map(|c| c.spec())
    }
}
