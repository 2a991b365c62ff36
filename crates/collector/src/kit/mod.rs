//! The small kit every handler uses: its state, the error answer, who may
//! ask, and reading a body. It knows no handler.

mod access;
mod body;
mod error;
mod state;

pub(crate) use access::{authenticate, authorize_change, authorize_read, bearer};
pub(crate) use body::{read_body, read_json};
pub(crate) use error::{cut_echo, ApiError};
pub(crate) use state::{decode_slot, AppState};
