"""The ledger: accounts, credits and jobs as a deterministic state machine over signed records,
its SQLite store, and verification of a whole chain from the genesis.

- :mod:`~modelmine.ledger.records`: record kinds, ``parse_record`` and the ``make_*`` builders.
- :mod:`~modelmine.ledger.rules`: what each record may do and does.
- :mod:`~modelmine.ledger.state`: ``LedgerState``, the consensus ``Application``, and queries.
- :mod:`~modelmine.ledger.store`: ``LedgerStore``, blocks + state in one transaction per block.
- :mod:`~modelmine.ledger.verify`: ``verify_chain``.
- :mod:`~modelmine.ledger.chainbuilder`: real blocks and commits without a network.
"""

from modelmine.ledger.chainbuilder import ChainBuilder, make_commit
from modelmine.ledger.entries import (
    Account,
    Claim,
    Contribution,
    Job,
    JobStatus,
    LedgerStats,
    NodeEarnings,
)
from modelmine.ledger.payout import cancel_earnings, planned_samples, reward_pool, split
from modelmine.ledger.records import (
    KINDS,
    JobCancel,
    JobCheckpoint,
    JobClaim,
    JobComplete,
    JobFail,
    JobSubmit,
    Record,
    RecordError,
    Register,
    Transfer,
    make_job_cancel,
    make_job_checkpoint,
    make_job_claim,
    make_job_complete,
    make_job_fail,
    make_job_submit,
    make_register,
    make_transfer,
    parse_record,
    record_id,
)
from modelmine.ledger.rules import MAX_CLAIMS, MAX_SUBMIT_AHEAD_MS, STALL_MS
from modelmine.ledger.state import LedgerError, LedgerState, StateChanges
from modelmine.ledger.store import DB_FILE, LedgerStore, StoredBlock, StoreError, db_path
from modelmine.ledger.verify import VerifyReport, verify_chain

__all__ = [
    "DB_FILE",
    "KINDS",
    "MAX_CLAIMS",
    "MAX_SUBMIT_AHEAD_MS",
    "STALL_MS",
    "Account",
    "ChainBuilder",
    "Claim",
    "Contribution",
    "Job",
    "JobCancel",
    "JobCheckpoint",
    "JobClaim",
    "JobComplete",
    "JobFail",
    "JobStatus",
    "JobSubmit",
    "LedgerError",
    "LedgerState",
    "LedgerStats",
    "LedgerStore",
    "NodeEarnings",
    "Record",
    "RecordError",
    "Register",
    "StateChanges",
    "StoreError",
    "StoredBlock",
    "Transfer",
    "VerifyReport",
    "cancel_earnings",
    "db_path",
    "make_commit",
    "make_job_cancel",
    "make_job_checkpoint",
    "make_job_claim",
    "make_job_complete",
    "make_job_fail",
    "make_job_submit",
    "make_register",
    "make_transfer",
    "parse_record",
    "planned_samples",
    "record_id",
    "reward_pool",
    "split",
    "verify_chain",
]
