// Two methods under one wire name: the second would never be called.
#[switchboard::service]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;

    #[switchboard(name = "Add")]
    async fn plus(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
