BEGIN TRANSACTION;
CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        mnemonic TEXT NOT NULL,
        severity INTEGER NOT NULL,
        tags TEXT NOT NULL,
        detail TEXT NOT NULL,
        lines TEXT NOT NULL,
        emitted INTEGER NOT NULL DEFAULT 0
    );
CREATE TABLE credentials (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        piid TEXT NOT NULL,
        cert BLOB NOT NULL,
        chain TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        stored_at TEXT NOT NULL
    );
CREATE TABLE intervals (
        start TEXT PRIMARY KEY,
        "end" TEXT NOT NULL,
        status TEXT NOT NULL,
        registration TEXT NOT NULL,
        "authorization" TEXT NOT NULL,
        enforcement TEXT,
        tags TEXT NOT NULL
    );
CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
CREATE TABLE offline_exports (
        number INTEGER PRIMARY KEY AUTOINCREMENT,
        export TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        piid TEXT,
        cert_sha256 TEXT,
        carries TEXT NOT NULL,
        imported_at TEXT
    );
CREATE TABLE offline_requests (
        nonce TEXT PRIMARY KEY,
        number INTEGER NOT NULL REFERENCES offline_exports (number),
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        piid TEXT,
        first_seq INTEGER,
        last_seq INTEGER,
        extra TEXT NOT NULL DEFAULT '{}',
        applied_at TEXT
    );
CREATE TABLE open_interval (
        start TEXT PRIMARY KEY,
        peaks TEXT NOT NULL,
        samples INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0
    );
CREATE TABLE outbox (
        report_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        piid TEXT NOT NULL,
        interval_start TEXT NOT NULL,
        payload TEXT NOT NULL,
        queued_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
CREATE TABLE product (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
INSERT INTO "product" VALUES(1,'{"auth_next_attempt":"2027-01-04T09:02:00.000011+00:00","authorization":"OUT_OF_COMPLIANCE","authorized_tags":["hcs-premium-seat","hcs-standard-seat"],"comm_ok":false,"enforcement":"OUT_OF_COMPLIANCE","entitlements":{"hcs-outbound-port":0,"hcs-premium-seat":5,"hcs-standard-seat":100},"evaluation_used_s":1036800.000007,"evaluation_warned":[7,14,30],"id_next_attempt":"2027-01-04T09:01:00.000010+00:00","identity":{"cert_expires_at":"2028-01-04T08:00:00.999999+00:00","cert_issued_at":"2027-01-04T08:00:00.246914+00:00","piid":"PIID-7f3a","registered_at":"2027-01-04T08:00:00.123457+00:00"},"last_auth_at":"2027-01-07T08:00:00.000001+00:00","last_comm_error":"d\u00e9lai d\u00e9pass\u00e9 \u007f \ud83d\ude00","last_sample_at":"2027-01-04T08:00:59.999999+00:00","license_type":"flex-hcs","marks":{"ENTITLEMENT_REPORT_FAILED":"2027-01-05T08:00:00+00:00","SYSTEM_IN_OOC_STATE":"2027-01-04T08:00:00.000042+00:00"},"registration":"REGISTERED","report_failures":3,"report_next_attempt":"2027-01-04T08:45:00.000003+00:00","tags":{"hcs-extra":{"locked":30,"ooc_since":"2026-10-05T07:59:59.999993+00:00","overage_count":5,"run_peak":30,"state":"ENFORCEMENT"},"hcs-outbound-port":{"locked":12,"ooc_since":"2027-01-04T09:00:00.000005+00:00","overage_count":5,"run_peak":12,"state":"OUT_OF_COMPLIANCE"},"hcs-premium-seat":{"locked":null,"ooc_since":null,"overage_count":3,"run_peak":7,"state":"OVERAGE"},"hcs-standard-seat":{"locked":null,"ooc_since":null,"overage_count":0,"run_peak":0,"state":"IN_COMPLIANCE"}},"tags_in_use":["hcs-outbound-port","hcs-standard-seat"]}','2027-01-04T08:00:00+00:00');
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO "schema_version" VALUES(3);
CREATE INDEX alerts_pending ON alerts (emitted) WHERE emitted = 0;
CREATE INDEX offline_requests_export ON offline_requests (number, position);
DELETE FROM "sqlite_sequence";
COMMIT;
