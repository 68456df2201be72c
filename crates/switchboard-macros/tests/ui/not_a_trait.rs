// The attribute goes on a trait, not on the type that implements it.
#[switchboard::service]
pub struct Arith;

fn main() {}
