// The generated server calls methods from safe code.
#[switchboard::service]
pub trait Arith {
    async unsafe fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
