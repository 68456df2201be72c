// Only methods: an associated type (or const) has no wire meaning.
#[switchboard::service]
pub trait Arith {
    type Number;

    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
