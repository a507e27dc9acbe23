//! The email channel: a plain-text message per alert through lettre's async
//! SMTP transport (tokio, rustls with aws-lc-rs), over a plain connection,
//! STARTTLS (required) or TLS from the start.

use callguard_core::{ErrorKind, ServiceError};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Channel, ChannelKind, Sending};
use crate::config::{EmailConfig, SmtpTls};
use crate::{Alert, AlertsError};
use callguard_core::http::error_chain;

pub(crate) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub(crate) fn new(config: &EmailConfig) -> Result<Self, AlertsError> {
        let setup = |e: lettre::transport::smtp::Error| AlertsError::Client {
            channel: ChannelKind::Email,
            reason: error_chain(&e),
        };
        let host = config.smtp_host.as_str();
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(setup)?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(setup)?,
        };
        let mut builder = builder
            .port(config.port())
            .timeout(Some(config.timeout.get()));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let invalid =
            |e: callguard_core::ValidationError| AlertsError::Config(e.in_section("alerts.email"));
        Ok(Self {
            transport: builder.build(),
            from: config.sender().map_err(invalid)?,
            to: config.recipients().map_err(invalid)?,
        })
    }

    fn message(&self, alert: &Alert) -> Result<Message, ServiceError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(alert.text()).map_err(|e| {
            ServiceError::new(
                ErrorKind::InvalidRequest,
                format!("the message could not be built: {e}"),
            )
        })
    }
}

impl Channel for Email {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    fn send<'a>(&'a self, alert: &'a Alert, _part: usize) -> Sending<'a> {
        Box::pin(async move {
            let message = self.message(alert)?;
            self.transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| classify(&e))
        })
    }
}

/// Classifies an SMTP failure: 4xx replies are transient, 5xx permanent
/// (530/534/535: the credentials), timeouts and connection or TLS failures
/// transient.
fn classify(error: &lettre::transport::smtp::Error) -> ServiceError {
    let code = error
        .status()
        .and_then(|code| code.to_string().parse::<u16>().ok());
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_transient() {
        ErrorKind::Unavailable
    } else if error.is_permanent() {
        match code {
            Some(530 | 534 | 535) => ErrorKind::Unauthorized,
            _ => ErrorKind::InvalidRequest,
        }
    } else if error.is_response() || error.is_client() {
        ErrorKind::BadResponse
    } else {
        // Connection, TLS and I/O failures.
        ErrorKind::Connect
    };
    let detail = match code {
        Some(code) => format!("SMTP {code}: {}", error_chain(error)),
        None => format!("SMTP: {}", error_chain(error)),
    };
    ServiceError::new(kind, detail)
}
