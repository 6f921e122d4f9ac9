#!/usr/bin/env node
// Compiles contracts/SetRegistry.sol with the solc-js pinned in package-lock.json and
// writes the artifact the Python package ships (anchoring/artifacts/SetRegistry.json).
//
//   node scripts/build_contract.js          rewrite the artifact
//   node scripts/build_contract.js --check  exit 1 if the committed artifact differs
//
// The output depends only on the source bytes, the compiler version and SETTINGS below:
// keys are sorted and the JSON is laid out one way, so a rebuild is byte-identical and
// --check can compare bytes rather than interpret JSON.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const SOURCE_NAME = "contracts/SetRegistry.sol";
const CONTRACT = "SetRegistry";
const ARTIFACT = path.join(ROOT, "src/stateset_sequencer/anchoring/artifacts/SetRegistry.json");

// Fixed so that the bytecode is reproducible. evmVersion "cancun" is the newest fork whose
// opcodes (PUSH0, MCOPY) both test chains execute: py-evm 0.12 stops at Prague and anvil
// runs Prague or later, while solc 0.8.37 would default to Osaka (CLZ), which py-evm lacks.
// Cancun rather than Prague because Prague adds no opcode and more L2s accept Cancun code.
// viaIR because the legacy code generator runs out of stack decoding the fifteen arguments
// of commitBatchWithStarkProof. The metadata hash is left out of the bytecode so that
// editing a comment changes the recorded source hash but not the deployed code.
const SETTINGS = {
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none" },
  optimizer: { enabled: true, runs: 200 },
  viaIR: true,
};

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
    return sorted;
  }
  return value;
}

function render(value) {
  return JSON.stringify(sortKeys(value), null, 2) + "\n";
}

function compile() {
  const sourceBytes = fs.readFileSync(path.join(ROOT, SOURCE_NAME));
  const input = {
    language: "Solidity",
    sources: { [SOURCE_NAME]: { content: sourceBytes.toString("utf8") } },
    settings: {
      ...SETTINGS,
      outputSelection: {
        [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = output.errors || [];
  for (const problem of problems) process.stderr.write(problem.formattedMessage + "\n");
  // Warnings fail the build too: the source is small enough to keep at zero, and a new
  // warning after a compiler or source change deserves a look before it is committed.
  if (problems.length > 0) {
    process.stderr.write(`build_contract: ${problems.length} compiler message(s), no artifact\n`);
    process.exit(2);
  }
  const compiled = output.contracts[SOURCE_NAME][CONTRACT];
  return render({
    abi: compiled.abi,
    bytecode: "0x" + compiled.evm.bytecode.object,
    compiler: solc.version(),
    contractName: CONTRACT,
    deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
    settings: SETTINGS,
    sourceSha256: crypto.createHash("sha256").update(sourceBytes).digest("hex"),
  });
}

function main(argv) {
  const args = argv.slice(2);
  if (args.some((arg) => arg !== "--check")) {
    process.stderr.write("usage: node scripts/build_contract.js [--check]\n");
    process.exit(2);
  }
  const built = compile();
  const relative = path.relative(ROOT, ARTIFACT);
  if (args.includes("--check")) {
    let committed = null;
    try {
      committed = fs.readFileSync(ARTIFACT, "utf8");
    } catch (error) {
      process.stderr.write(`build_contract: cannot read ${relative}: ${error.message}\n`);
      process.exit(1);
    }
    if (committed !== built) {
      process.stderr.write(
        `build_contract: ${relative} does not match ${SOURCE_NAME}; run make contract\n`,
      );
      process.exit(1);
    }
    process.stdout.write(`build_contract: ${relative} matches ${SOURCE_NAME}\n`);
    return;
  }
  fs.mkdirSync(path.dirname(ARTIFACT), { recursive: true });
  fs.writeFileSync(ARTIFACT, built);
  process.stdout.write(`build_contract: wrote ${relative}\n`);
}

main(process.argv);
