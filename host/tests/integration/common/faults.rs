//! Injected database failures: a trigger that makes one statement on a
//! table fail as a serialization failure (SQLSTATE 40001) would, when armed.

use sqlx::{AssertSqlSafe, PgPool};

/// Installs the trigger on `table`, disarmed.
pub async fn install(pool: &PgPool, table: &str) {
    for sql in [
        "CREATE SEQUENCE injected_fault START 2".to_owned(),
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('injected_fault') = 1 THEN
             RAISE EXCEPTION 'injected failure' USING ERRCODE = '40001';
           END IF;
           RETURN NULL;
         END $$"
            .to_owned(),
        format!(
            "CREATE TRIGGER injected_fault BEFORE INSERT OR UPDATE ON {table}
             FOR EACH STATEMENT EXECUTE FUNCTION injected_fault()"
        ),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
    }
}

/// Makes the next statement on the table fail, once.
pub async fn arm(pool: &PgPool) {
    sqlx::query("SELECT setval('injected_fault', 1, false)")
        .execute(pool)
        .await
        .unwrap();
}

/// Whether the armed failure has happened (and a statement came after).
pub async fn fired(pool: &PgPool) -> bool {
    let next: i64 = sqlx::query_scalar("SELECT last_value FROM injected_fault")
        .fetch_one(pool)
        .await
        .unwrap();
    next > 1
}
