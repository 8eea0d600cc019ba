//! The bundled mocks a sandboxed hub runs in-process, one set per enabled channel, each started
//! by its family ([`crate::channels::Family::start_mocks`]).

use std::collections::BTreeMap;

use clm_contracts::ChannelId;
use clm_mocks::{ChannelMock, CrmMock, SmsMock, SmtpMock};

use crate::config::Config;

/// The bundled mocks of a sandboxed hub.
#[derive(Default)]
pub struct Sandbox {
    /// The SMS gateway (Kannel and JSON dialects), when `sms` is enabled.
    pub sms: Option<SmsMock>,
    /// One mock per enabled HTTP JSON channel (wink, elk, eissd).
    pub channels: BTreeMap<ChannelId, ChannelMock>,
    /// SAP CRM's campaign service, when `sap_crm` is enabled.
    pub sap_crm: Option<CrmMock>,
    /// The CRM ESB (Amdocs and CRM B2C), when either is enabled.
    pub crm_esb: Option<CrmMock>,
    /// The SMTP relay, when e-mail is enabled.
    pub smtp: Option<SmtpMock>,
}

impl Sandbox {
    /// Starts the mocks of every enabled channel. A mock that cannot start fails start-up after
    /// the ones already started are stopped.
    pub(crate) async fn start(config: &Config, public_url: &str) -> anyhow::Result<Sandbox> {
        let mut sandbox = Sandbox::default();
        for family in crate::channels::families() {
            if !family
                .serves
                .iter()
                .any(|id| config.channel(*id).is_enabled())
            {
                continue;
            }
            let mut mocks = crate::channels::Mocks {
                config,
                public_url,
                sandbox: &mut sandbox,
            };
            if let Err(e) = (family.start_mocks)(&mut mocks).await {
                sandbox.shutdown().await;
                return Err(e);
            }
        }
        Ok(sandbox)
    }

    pub fn mock(&self, channel: ChannelId) -> Option<&ChannelMock> {
        self.channels.get(&channel)
    }

    /// The CRM mock a CRM channel sends to.
    pub fn crm_mock(&self, channel: ChannelId) -> Option<&CrmMock> {
        match crate::channels::crm::mock_kind(channel)? {
            clm_mocks::CrmKind::SapCrm => self.sap_crm.as_ref(),
            clm_mocks::CrmKind::Esb => self.crm_esb.as_ref(),
        }
    }

    pub(crate) async fn shutdown(self) {
        if let Some(m) = self.sms {
            m.shutdown().await;
        }
        for (_, m) in self.channels {
            m.shutdown().await;
        }
        for m in [self.sap_crm, self.crm_esb].into_iter().flatten() {
            m.shutdown().await;
        }
        if let Some(m) = self.smtp {
            m.shutdown().await;
        }
    }
}
