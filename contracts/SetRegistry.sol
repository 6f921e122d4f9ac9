// SPDX-License-Identifier: MIT
// The pragma names one exact compiler: the committed artifact is checked byte for byte
// against a rebuild (scripts/build_contract.js --check), so a floating range would let a
// different solc produce a different artifact from the same source.
pragma solidity 0.8.37;

/// @title SetRegistry
/// @notice Anchors the sequencer's batch commitments (Merkle root of a batch's events and
///         the state root it leads to) on an EVM chain, one batch per transaction.
/// @dev Written for this project to the external interface of the StateSet reference
///      registry, so that the sequencer's anchoring code (calldata, selectors, custom errors,
///      the BatchCommitted log it reads back) can be exercised against real bytecode on
///      eth-tester and anvil. Unlike the reference it is not an upgradeable proxy: the
///      constructor does what `initialize` does there. The few pieces of access control and
///      pausing it needs are written out here rather than imported, and keep the error and
///      event signatures of the widely used library versions the reference builds on, so a
///      client decodes both contracts' reverts the same way. See docs/CONTRACT.md.
contract SetRegistry {
    // ---------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------

    /// @notice What is kept per anchored batch.
    /// @dev The field order is the ABI of getBatchCommitment and must not change. The
    ///      previous state root is deliberately not stored: under strict mode it equals the
    ///      previous batch's newStateRoot, and leaving it out keeps the record at three slots.
    ///      A zero timestamp is how "no such batch" is told apart, since every stored record
    ///      gets the (non-zero) block timestamp.
    struct BatchCommitment {
        bytes32 eventsRoot;
        bytes32 newStateRoot;
        uint64 sequenceStart;
        uint64 sequenceEnd;
        uint32 eventCount;
        uint64 timestamp;
    }

    /// @notice Metadata of a STARK proof over a batch. The proof itself is not verified on
    ///         chain: this is a commitment that off-chain verifiers check against.
    struct StarkProofCommitment {
        bytes32 proofHash;
        bytes32 policyHash;
        uint64 policyLimit;
        bool allCompliant;
        uint64 proofSize;
        uint64 provingTimeMs;
        uint64 timestamp;
    }

    // ---------------------------------------------------------------------------------
    // State
    // ---------------------------------------------------------------------------------

    /// @notice The one administrator: manages sequencers, strict mode and the pause switch.
    address public owner;

    /// @notice While true every commit path reverts with EnforcedPause (an emergency stop
    ///         that leaves all reads available).
    bool public paused;

    /// @notice When on (the default), each batch must continue its tenant/store's chain:
    ///         its prevStateRoot equals the last batch's newStateRoot and its first sequence
    ///         follows the last batch's final one.
    bool public strictModeEnabled;

    /// @notice Addresses allowed to commit batches and proofs.
    mapping(address => bool) public authorizedSequencers;

    /// @notice How many addresses are currently authorized (kept so monitoring needs no
    ///         log scan).
    uint256 public authorizedSequencerCount;

    /// @notice Batch records by batch id.
    mapping(bytes32 => BatchCommitment) public commitments;

    /// @notice The most recent batch id per tenantStoreKey; zero until the first batch.
    /// @dev The head sequence and latest state root are read through this id rather than
    ///      kept in mappings of their own, so they can never disagree with the record.
    mapping(bytes32 => bytes32) public latestCommitment;

    /// @notice STARK proof metadata by batch id.
    mapping(bytes32 => StarkProofCommitment) public starkProofs;

    // ---------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------

    event SequencerAuthorized(address indexed sequencer, bool authorized);

    /// @notice One per anchored batch. Indexed by batch id (to find a batch's transaction
    ///         again) and by tenantStoreKey (to list one stream's anchors).
    event BatchCommitted(
        bytes32 indexed batchId,
        bytes32 indexed tenantStoreKey,
        bytes32 eventsRoot,
        bytes32 newStateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount
    );

    event StrictModeUpdated(bool enabled);

    event StarkProofCommitted(
        bytes32 indexed batchId,
        bytes32 proofHash,
        bytes32 policyHash,
        bool allCompliant,
        uint64 proofSize
    );

    event Paused(address account);
    event Unpaused(address account);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    // ---------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------

    error NotAuthorizedSequencer();
    error InvalidSequenceRange();
    error EmptyEventsRoot();
    error BatchAlreadyCommitted();
    error StateRootMismatch(bytes32 expected, bytes32 provided);
    error SequenceGap(uint64 expected, uint64 provided);
    error InvalidEventCount(uint64 expected, uint32 provided);
    error InvalidProof();
    error BatchNotCommitted();
    error StarkProofAlreadyCommitted();
    error StateRootMismatchInProof();
    error InvalidAddress();
    error EnforcedPause();
    error ExpectedPause();
    error OwnableUnauthorizedAccount(address account);
    error OwnableInvalidOwner(address owner);

    // ---------------------------------------------------------------------------------
    // Modifiers
    // ---------------------------------------------------------------------------------

    modifier onlyOwner() {
        if (msg.sender != owner) revert OwnableUnauthorizedAccount(msg.sender);
        _;
    }

    /// @dev Checked before anything else, so a paused registry answers EnforcedPause even
    ///      to callers that would fail later checks: operators see why the chain said no.
    modifier whenNotPaused() {
        if (paused) revert EnforcedPause();
        _;
    }

    /// @dev Commit paths make no external calls, so no reentrancy guard is needed.
    modifier onlySequencer() {
        if (!authorizedSequencers[msg.sender]) revert NotAuthorizedSequencer();
        _;
    }

    // ---------------------------------------------------------------------------------
    // Construction and administration
    // ---------------------------------------------------------------------------------

    /// @notice The deployer becomes the owner and strict mode starts on, as after the
    ///         reference's initialize.
    /// @param initialSequencer Authorized at once when non-zero, like initialize's second
    ///        argument; pass address(0) to authorize sequencers later. The deployer is not
    ///        authorized implicitly: owning the registry and committing to it are separate
    ///        rights, and a key that only administers should not be able to anchor.
    constructor(address initialSequencer) {
        _transferOwnership(msg.sender);
        strictModeEnabled = true;
        if (initialSequencer != address(0)) {
            authorizedSequencers[initialSequencer] = true;
            authorizedSequencerCount = 1;
            emit SequencerAuthorized(initialSequencer, true);
        }
    }

    /// @notice Grant or revoke a sequencer's right to commit.
    /// @dev Always emits, even when nothing changes, so the log is a complete record of
    ///      the owner's decisions; the count moves only on a real change.
    function setSequencerAuthorization(address sequencer, bool authorized) external onlyOwner {
        if (sequencer == address(0)) revert InvalidAddress();
        bool was = authorizedSequencers[sequencer];
        authorizedSequencers[sequencer] = authorized;
        if (authorized && !was) {
            authorizedSequencerCount += 1;
        } else if (!authorized && was) {
            authorizedSequencerCount -= 1;
        }
        emit SequencerAuthorized(sequencer, authorized);
    }

    /// @notice Turn the chain-continuity checks on or off. Off is for migrations and
    ///         backfills, where batches of one stream may arrive out of order.
    function setStrictMode(bool enabled) external onlyOwner {
        strictModeEnabled = enabled;
        emit StrictModeUpdated(enabled);
    }

    /// @notice Stop all commits (reads keep working). Pausing twice is an error, so a
    ///         caller learns that someone else already pulled the switch.
    function pause() external onlyOwner {
        if (paused) revert EnforcedPause();
        paused = true;
        emit Paused(msg.sender);
    }

    function unpause() external onlyOwner {
        if (!paused) revert ExpectedPause();
        paused = false;
        emit Unpaused(msg.sender);
    }

    /// @notice Hand the registry to another administrator. The zero address is refused:
    ///         it would leave sequencers, strict mode and the pause switch unmanageable.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert OwnableInvalidOwner(address(0));
        _transferOwnership(newOwner);
    }

    function _transferOwnership(address newOwner) private {
        address previous = owner;
        owner = newOwner;
        emit OwnershipTransferred(previous, newOwner);
    }

    // ---------------------------------------------------------------------------------
    // Commits
    // ---------------------------------------------------------------------------------

    /// @notice Anchor one batch of a tenant/store's events.
    /// @dev The checks run in a fixed order (pause, authorization, range, count, root,
    ///      duplicate, then chain continuity) so that the same bad call always gets the same
    ///      error, on this contract and on the reference.
    function commitBatch(
        bytes32 batchId,
        bytes32 tenantId,
        bytes32 storeId,
        bytes32 eventsRoot,
        bytes32 prevStateRoot,
        bytes32 newStateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount
    ) external whenNotPaused onlySequencer {
        _storeBatch(
            batchId,
            keccak256(abi.encodePacked(tenantId, storeId)),
            eventsRoot,
            prevStateRoot,
            newStateRoot,
            sequenceStart,
            sequenceEnd,
            eventCount
        );
    }

    /// @notice Record a STARK proof's metadata for a batch that is already anchored.
    /// @dev Only newStateRoot is compared with the batch: prevStateRoot is accepted for
    ///      interface compatibility but cannot be checked, since it is not stored.
    function commitStarkProof(
        bytes32 batchId,
        bytes32 proofHash,
        bytes32 prevStateRoot,
        bytes32 newStateRoot,
        bytes32 policyHash,
        uint64 policyLimit,
        bool allCompliant,
        uint64 proofSize,
        uint64 provingTimeMs
    ) external whenNotPaused onlySequencer {
        prevStateRoot; // part of the interface; see the note above
        BatchCommitment storage batch = commitments[batchId];
        if (batch.timestamp == 0) revert BatchNotCommitted();
        if (starkProofs[batchId].timestamp != 0) revert StarkProofAlreadyCommitted();
        if (batch.newStateRoot != newStateRoot) revert StateRootMismatchInProof();
        _storeProof(
            batchId,
            proofHash,
            policyHash,
            policyLimit,
            allCompliant,
            proofSize,
            provingTimeMs
        );
    }

    /// @notice A batch and its proof in one transaction: either both are stored or, on any
    ///         revert, neither.
    function commitBatchWithStarkProof(
        bytes32 batchId,
        bytes32 tenantId,
        bytes32 storeId,
        bytes32 eventsRoot,
        bytes32 prevStateRoot,
        bytes32 newStateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount,
        bytes32 proofHash,
        bytes32 policyHash,
        uint64 policyLimit,
        bool allCompliant,
        uint64 proofSize,
        uint64 provingTimeMs
    ) external whenNotPaused onlySequencer {
        _storeBatch(
            batchId,
            keccak256(abi.encodePacked(tenantId, storeId)),
            eventsRoot,
            prevStateRoot,
            newStateRoot,
            sequenceStart,
            sequenceEnd,
            eventCount
        );
        _storeProof(
            batchId,
            proofHash,
            policyHash,
            policyLimit,
            allCompliant,
            proofSize,
            provingTimeMs
        );
    }

    // ---------------------------------------------------------------------------------
    // Reads
    // ---------------------------------------------------------------------------------

    function batchExists(bytes32 batchId) external view returns (bool exists) {
        return commitments[batchId].timestamp != 0;
    }

    /// @notice Existence of many batches in one call, for reconciling after an outage.
    function batchExists(bytes32[] calldata batchIds) external view returns (bool[] memory exists) {
        exists = new bool[](batchIds.length);
        for (uint256 i = 0; i < batchIds.length; ++i) {
            exists[i] = commitments[batchIds[i]].timestamp != 0;
        }
    }

    /// @notice The stored record; all zero fields (timestamp 0) for an unknown batch.
    function getBatchCommitment(
        bytes32 batchId
    ) external view returns (BatchCommitment memory commitment) {
        return commitments[batchId];
    }

    /// @notice The final sequence of the stream's latest batch; 0 before any batch.
    function getHeadSequence(
        bytes32 tenantId,
        bytes32 storeId
    ) external view returns (uint64 sequence) {
        bytes32 latest = latestCommitment[keccak256(abi.encodePacked(tenantId, storeId))];
        return latest == bytes32(0) ? 0 : commitments[latest].sequenceEnd;
    }

    /// @notice The newStateRoot of the stream's latest batch; zero before any batch.
    function getLatestStateRoot(
        bytes32 tenantId,
        bytes32 storeId
    ) external view returns (bytes32 stateRoot) {
        bytes32 latest = latestCommitment[keccak256(abi.encodePacked(tenantId, storeId))];
        return latest == bytes32(0) ? bytes32(0) : commitments[latest].newStateRoot;
    }

    /// @notice The id of the stream's latest batch; zero before any batch.
    function getLatestBatchId(
        bytes32 tenantId,
        bytes32 storeId
    ) external view returns (bytes32 batchId) {
        return latestCommitment[keccak256(abi.encodePacked(tenantId, storeId))];
    }

    function hasStarkProof(bytes32 batchId) external view returns (bool hasProof) {
        return starkProofs[batchId].timestamp != 0;
    }

    /// @notice Whether a proof is recorded for the batch and has this hash.
    function verifyStarkProofHash(
        bytes32 batchId,
        bytes32 proofHash
    ) external view returns (bool valid) {
        StarkProofCommitment storage proof = starkProofs[batchId];
        return proof.timestamp != 0 && proof.proofHash == proofHash;
    }

    function getStarkProofDetails(
        bytes32 batchId
    )
        external
        view
        returns (bytes32 proofHash, bytes32 policyHash, bool allCompliant, uint64 timestamp)
    {
        StarkProofCommitment storage proof = starkProofs[batchId];
        return (proof.proofHash, proof.policyHash, proof.allCompliant, proof.timestamp);
    }

    /// @notice Check a Merkle path from a leaf to a batch's eventsRoot, with keccak256 over
    ///         each (left, right) pair; bit i of index says whether the node at level i is a
    ///         right child. False for an unknown batch.
    /// @dev This is the reference's tree shape. The sequencer's own VES trees hash with
    ///      domain-separated SHA-256, so their proofs are verified off chain, not here.
    function verifyInclusion(
        bytes32 batchId,
        bytes32 leaf,
        bytes32[] calldata proof,
        uint256 index
    ) external view returns (bool valid) {
        BatchCommitment storage commitment = commitments[batchId];
        if (commitment.timestamp == 0) return false;
        bytes32 node = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            node = index & 1 == 0
                ? keccak256(abi.encodePacked(node, proof[i]))
                : keccak256(abi.encodePacked(proof[i], node));
            index >>= 1;
        }
        return node == commitment.eventsRoot;
    }

    // ---------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------

    function _storeBatch(
        bytes32 batchId,
        bytes32 tenantStoreKey,
        bytes32 eventsRoot,
        bytes32 prevStateRoot,
        bytes32 newStateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount
    ) private {
        if (sequenceEnd < sequenceStart) revert InvalidSequenceRange();
        // span + 1 is the batch's size; span itself cannot overflow (end >= start). Testing
        // the span rather than the size also rejects the one range whose size wraps to 0 in
        // 64 bits (0 .. 2^64-1), which a 64-bit size test would let through with count 0.
        uint64 span = sequenceEnd - sequenceStart;
        uint64 expected;
        unchecked {
            expected = span + 1;
        }
        if (span >= type(uint32).max || eventCount != expected) {
            revert InvalidEventCount(expected, eventCount);
        }
        if (eventsRoot == bytes32(0)) revert EmptyEventsRoot();
        if (commitments[batchId].timestamp != 0) revert BatchAlreadyCommitted();

        if (strictModeEnabled) {
            bytes32 lastId = latestCommitment[tenantStoreKey];
            // A stream's first batch has nothing to continue, so it may start anywhere:
            // the sequencer can begin anchoring a stream that already has history.
            if (lastId != bytes32(0)) {
                BatchCommitment storage last = commitments[lastId];
                if (last.newStateRoot != prevStateRoot) {
                    revert StateRootMismatch(last.newStateRoot, prevStateRoot);
                }
                uint64 next;
                unchecked {
                    // A stream that ended at 2^64-1 can only be continued from 0, as on
                    // the reference; no real stream gets there.
                    next = last.sequenceEnd + 1;
                }
                if (sequenceStart != next) revert SequenceGap(next, sequenceStart);
            }
        }

        commitments[batchId] = BatchCommitment({
            eventsRoot: eventsRoot,
            newStateRoot: newStateRoot,
            sequenceStart: sequenceStart,
            sequenceEnd: sequenceEnd,
            eventCount: eventCount,
            timestamp: uint64(block.timestamp)
        });
        latestCommitment[tenantStoreKey] = batchId;

        emit BatchCommitted(
            batchId,
            tenantStoreKey,
            eventsRoot,
            newStateRoot,
            sequenceStart,
            sequenceEnd,
            eventCount
        );
    }

    function _storeProof(
        bytes32 batchId,
        bytes32 proofHash,
        bytes32 policyHash,
        uint64 policyLimit,
        bool allCompliant,
        uint64 proofSize,
        uint64 provingTimeMs
    ) private {
        // A zero hash or size is what an unset field looks like; refusing them keeps
        // "no proof" and "a proof" distinguishable to every reader.
        if (proofHash == bytes32(0) || proofSize == 0) revert InvalidProof();
        starkProofs[batchId] = StarkProofCommitment({
            proofHash: proofHash,
            policyHash: policyHash,
            policyLimit: policyLimit,
            allCompliant: allCompliant,
            proofSize: proofSize,
            provingTimeMs: provingTimeMs,
            timestamp: uint64(block.timestamp)
        });
        emit StarkProofCommitted(batchId, proofHash, policyHash, allCompliant, proofSize);
    }
}
