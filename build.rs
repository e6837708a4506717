// sqlx::migrate! embeds migrations/ at compile time but does not ask Cargo to rebuild when
// they change; this does.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
