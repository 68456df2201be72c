// A second `self` parameter (rejected while parsing, before the macro's own
// checks run).
#[switchboard::service]
pub trait Arith {
    async fn add(&self, self) -> Result<i64, switchboard::Status>;
}

fn main() {}
