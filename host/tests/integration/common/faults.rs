//! Injected database failures: a trigger that makes one statement on a
//! table fail as a serialization failure (SQLSTATE 40001) would, when armed,
//! or with another SQLSTATE.

use sqlx::{AssertSqlSafe, PgPool};

/// Installs the trigger on `table`, disarmed.
pub async fn install(pool: &PgPool, table: &str) {
    for sql in [
        "CREATE SEQUENCE injected_fault START 2".to_owned(),
        "CREATE TABLE injected_fault_code (code text NOT NULL)".to_owned(),
        "INSERT INTO injected_fault_code VALUES ('40001')".to_owned(),
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('injected_fault') = 1 THEN
             RAISE EXCEPTION 'injected failure'
               USING ERRCODE = (SELECT code FROM injected_fault_code);
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

/// Makes the next statement on the table fail, once, as a serialization
/// failure.
pub async fn arm(pool: &PgPool) {
    arm_as(pool, "40001").await;
}

/// Makes the next statement on the table fail, once, with SQLSTATE `code`
/// (`22000`: the database refuses the content).
pub async fn arm_as(pool: &PgPool, code: &str) {
    sqlx::query("UPDATE injected_fault_code SET code = $1")
        .bind(code)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("SELECT setval('injected_fault', 1, false)")
        .execute(pool)
        .await
        .unwrap();
}

/// Takes back an armed failure that has not happened.
pub async fn disarm(pool: &PgPool) {
    sqlx::query("SELECT setval('injected_fault', 2, false)")
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
