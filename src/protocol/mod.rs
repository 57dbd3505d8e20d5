//! The FTP wire format, free of I/O: framing of control lines, Telnet filtering, commands,
//! replies and the address forms that carry data endpoints.

pub mod address;
pub mod command;
pub mod framing;
pub mod reply;
pub mod telnet;

pub use address::{AddressError, HostPort};
pub use command::{Command, CommandError, Verb};
pub use framing::{Frame, LineFramer};
pub use reply::{ReplyError, ReplyLine, ReplyLineKind, ReplyTracker};
pub use telnet::{TelnetEvent, TelnetFilter};
