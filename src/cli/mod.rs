//! The commands besides `serve`, one file each: `analyze` (a model's inputs in, WVA's decision out),
//! `scrape` (a metrics page in, the signals the server would extract out) and `status` (a server's
//! `/debug/variants`, fetched and rendered as the tables of [`tables`]).

pub mod analyze;
pub mod scrape;
pub mod status;
pub mod tables;

use std::io::Read;

use crate::error::Error;

/// A file's text, or stdin's for `-`.
pub(crate) fn read_input(input: &str) -> Result<String, Error> {
    if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::io("reading stdin", e))?;
        Ok(s)
    } else {
        std::fs::read_to_string(input).map_err(|e| Error::io(format!("reading {input}"), e))
    }
}
