--[[
slurm-k8s submit policy for plain `sbatch` (Slurm 22.05 job_submit/lua).

The same rules as the NAS validator (shared/jobscript/ in Python), read from the same settings
file (/etc/slurm-k8s/policy.conf, or $SLURMK8S_POLICY): one source of truth, two readers.
tests/unit/slurm/test_job_submit.py runs this file under lua5.3 and proves that, for every case
in tests/data/submission_cases.json, it reports exactly what the Python checks report.

* A job whose script has no `#K8S_` line is a plain Slurm job and passes untouched.
* A job with `#K8S_` lines is checked: its script's directives (parsed the way sbatch parses
  them, with line numbers) and the job's effective values (which the command line or SBATCH_*
  variables may have changed). Every problem goes to the user through slurm.log_user, one per
  line, and the job is refused.
* An accepted slurm-k8s job's script is replaced by a wrapper that runs the runner; the original
  travels base64-encoded in its comment lines (shared/jobscript/wrapping.py is the Python twin),
  and its AdminComment is set to M.ACCEPTED_MARK, which users cannot write: that mark, not the
  user-writable Comment or the script's look, makes a job a slurm-k8s job (slurm_job_modify).
* Every job (plain ones too) is refused if its script carries the wrapper's own text (a forged
  wrapper) or if a non-root submitter sets an AdminComment. #K8S_ jobs of uids below min_uid
  and #K8S_ jobs with a Comment other than the validator's `slurmk8s-key=<hex>` are refused.
* Bounded and linear: this runs inside slurmctld, under its job write lock, so a slow check
  stalls every user. A script over max_script_bytes is refused before it is parsed; at most
  M.MAX_PROBLEMS problems are kept (the lowest line numbers; "... and N more" counts the rest);
  no pass sorts or rescans an unbounded list (bench/lua_checker.py measures it).

All logic is in local functions so that tests can load this file outside slurmctld; the two
slurm_* entry points at the end are thin.
--]]

local M = {}

M.DEFAULT_POLICY_PATH = "/etc/slurm-k8s/policy.conf"

---------------------------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------------------------

-- Linear: the usual gsub("%s+$", "") retries at every blank of a long inner run (quadratic).
local function trim(s)
  if not s:find("%S") then return "" end
  return s:match("^%s*(.*%S)")
end

local function starts(s, prefix)
  return s:sub(1, #prefix) == prefix
end

local function split_words(s)
  local out = {}
  for w in s:gmatch("%S+") do out[#out + 1] = w end
  return out
end

local function is_digits(s)
  return s ~= nil and s:match("^[0-9]+$") ~= nil
end

local function basename(p)
  return p:match("([^/]*)$")
end

local function problem(list, line, message)
  if list.add then
    list:add(line, message)
  else
    list[#list + 1] = { line = line, message = message }
  end
end

-- The `limit` problems with the lowest line numbers, distinct, and a count of the rest
-- (twin of validation.ProblemList, fed in the same order). Memory O(limit); adding is O(1)
-- unless the problem displaces a listed one, which costs O(limit).
local ProblemList = {}
ProblemList.__index = ProblemList

function M.problem_list(limit)
  return setmetatable({ limit = limit, kept = {}, listed = {}, worst = 0, added = 0, more = 0 },
    ProblemList)
end

local function later(a, b)
  return a.line > b.line or (a.line == b.line and a.order > b.order)
end

function ProblemList:add(line, message)
  local kept = self.kept
  if #kept >= self.limit and line > kept[self.worst].line then
    self.more = self.more + 1 -- cannot equal a listed problem (all are on earlier lines)
    return
  end
  local key = line .. "\0" .. message
  if self.listed[key] then return end
  self.added = self.added + 1
  local entry = { line = line, message = message, order = self.added, key = key }
  if #kept < self.limit then
    kept[#kept + 1] = entry
    self.listed[key] = true
    if self.worst == 0 or later(entry, kept[self.worst]) then self.worst = #kept end
    return
  end
  self.more = self.more + 1
  if line >= kept[self.worst].line then return end
  self.listed[kept[self.worst].key] = nil
  kept[self.worst] = entry
  self.listed[key] = true
  local worst = 1
  for i = 2, #kept do
    if later(kept[i], kept[worst]) then worst = i end
  end
  self.worst = worst
end

function M.more_text(more, limit)
  return string.format("... and %d more problems (only the first %d are listed)", more, limit)
end

-- The listed problems by line, then one "... and N more" line if any were left out.
function ProblemList:result()
  local out = {}
  for i, e in ipairs(self.kept) do out[i] = e end
  table.sort(out, function(a, b) return later(b, a) end) -- at most `limit` entries
  for i, e in ipairs(out) do out[i] = { line = e.line, message = e.message } end
  if self.more > 0 then out[#out + 1] = { line = 0, message = M.more_text(self.more, self.limit) } end
  return out
end

---------------------------------------------------------------------------------------------
-- Policy file: `key = value`, lists space-separated, `#` comment lines
---------------------------------------------------------------------------------------------

local POLICY_DEFAULTS = {
  allowed_registries = { "nas-hub.local:5407" },
  max_cpus = 2, max_mem_mb = 16000, max_gpus = 4, max_nodes = 1, max_array_tasks = 100,
  max_script_bytes = 1048576, max_shm_mb = 8192,
  writable_roots = { "/mnt/test-k8s/results", "/mnt/test-k8s/home/%u" },
  script_roots = { "/mnt/test-k8s" },
  allow_root_owned_files = false, bash_syntax_check = true, min_uid = 1000, max_uid = 60000,
}
local LIST_KEYS = { allowed_registries = true, writable_roots = true, script_roots = true }
local BOOLEANS = { ["true"] = true, yes = true, on = true, ["1"] = true,
                   ["false"] = false, no = false, off = false, ["0"] = false }

function M.parse_policy(text)
  local policy = {}
  for k, v in pairs(POLICY_DEFAULTS) do policy[k] = v end
  local number = 0
  for raw in (text .. "\n"):gmatch("([^\n]*)\n") do
    number = number + 1
    local line = trim(raw)
    if line ~= "" and not starts(line, "#") then
      local key, value = line:match("^([^=]-)%s*=%s*(.-)$")
      if key == nil or key == "" then
        return nil, string.format("policy line %d: expected 'key = value'", number)
      end
      key = trim(key)
      local default = POLICY_DEFAULTS[key]
      if LIST_KEYS[key] then
        policy[key] = split_words(value)
      elseif type(default) == "number" then
        if not is_digits(value) then
          return nil, string.format("policy line %d: %s must be a whole number", number, key)
        end
        policy[key] = tonumber(value)
      elseif type(default) == "boolean" then
        if BOOLEANS[value:lower()] == nil then
          return nil, string.format("policy line %d: %s must be true or false", number, key)
        end
        policy[key] = BOOLEANS[value:lower()]
      end -- keys we do not know belong to other components: ignored, like the Python model
    end
  end
  return policy
end

function M.load_policy(path)
  local handle, err = io.open(path, "r")
  if handle == nil then return nil, "cannot read policy " .. tostring(err) end
  local text = handle:read("*a")
  handle:close()
  return M.parse_policy(text)
end

local function roots_for(policy, user)
  local roots = {}
  for i, root in ipairs(policy.writable_roots) do
    roots[i] = (root:gsub("%%u", function() return user end))
  end
  return roots
end

---------------------------------------------------------------------------------------------
-- Directive parsing, the way sbatch reads the leading comment block
---------------------------------------------------------------------------------------------

local N, R, O = 0, 1, 2 -- getopt_long has_arg: none, required, optional
M.LONG_OPTIONS = {
  ["account"] = R, ["acctg-freq"] = R, ["array"] = R, ["batch"] = R, ["bb"] = R, ["bbf"] = R,
  ["begin"] = R, ["chdir"] = R, ["cluster-constraint"] = R, ["clusters"] = R, ["comment"] = R,
  ["constraint"] = R, ["container"] = R, ["contiguous"] = N, ["core-spec"] = R,
  ["cores-per-socket"] = R, ["cpu-freq"] = R, ["cpus-per-gpu"] = R, ["cpus-per-task"] = R,
  ["deadline"] = R, ["delay-boot"] = R, ["dependency"] = R, ["distribution"] = R, ["error"] = R,
  ["exclude"] = R, ["exclusive"] = O, ["export"] = R, ["export-file"] = R,
  ["extra-node-info"] = R, ["get-user-env"] = O, ["gid"] = R, ["gpu-bind"] = R,
  ["gpu-freq"] = R, ["gpus"] = R, ["gpus-per-node"] = R, ["gpus-per-socket"] = R,
  ["gpus-per-task"] = R, ["gres"] = R, ["gres-flags"] = R, ["help"] = N, ["hint"] = R,
  ["hold"] = N, ["ignore-pbs"] = N, ["input"] = R, ["job-name"] = R,
  ["kill-on-invalid-dep"] = R, ["licenses"] = R, ["mail-type"] = R, ["mail-user"] = R,
  ["mcs-label"] = R, ["mem"] = R, ["mem-bind"] = R, ["mem-per-cpu"] = R, ["mem-per-gpu"] = R,
  ["mincpus"] = R, ["network"] = R, ["nice"] = O, ["no-kill"] = O, ["no-requeue"] = N,
  ["nodefile"] = R, ["nodelist"] = R, ["nodes"] = R, ["ntasks"] = R, ["ntasks-per-core"] = R,
  ["ntasks-per-gpu"] = R, ["ntasks-per-node"] = R, ["ntasks-per-socket"] = R,
  ["open-mode"] = R, ["output"] = R, ["overcommit"] = N, ["oversubscribe"] = N,
  ["parsable"] = N, ["partition"] = R, ["power"] = R, ["prefer"] = R, ["priority"] = R,
  ["profile"] = R, ["propagate"] = O, ["qos"] = R, ["quiet"] = N, ["reboot"] = N,
  ["requeue"] = N, ["reservation"] = R, ["signal"] = R, ["sockets-per-node"] = R,
  ["spread-job"] = N, ["switches"] = R, ["test-only"] = N, ["thread-spec"] = R,
  ["threads-per-core"] = R, ["time"] = R, ["time-min"] = R, ["tmp"] = R, ["uid"] = R,
  ["usage"] = N, ["use-min-nodes"] = N, ["verbose"] = N, ["version"] = N, ["wait"] = N,
  ["wait-all-nodes"] = R, ["wckey"] = R, ["wrap"] = R, ["x11"] = O,
}
M.SHORT_OPTIONS = {
  A = "account", a = "array", b = "begin", B = "extra-node-info", c = "cpus-per-task",
  C = "constraint", d = "dependency", D = "chdir", e = "error", F = "nodefile", G = "gpus",
  h = "help", H = "hold", i = "input", J = "job-name", k = "no-kill", L = "licenses",
  m = "distribution", M = "clusters", n = "ntasks", N = "nodes", o = "output",
  O = "overcommit", p = "partition", q = "qos", Q = "quiet", s = "oversubscribe",
  S = "core-spec", t = "time", u = "usage", v = "verbose", V = "version", w = "nodelist",
  W = "wait", x = "exclude",
}
local HETJOB_WORDS = { hetjob = true, packjob = true }

function M.tokenise(text)
  if not text:find("[\"'\\]") then
    -- No quote and no backslash (most lines): whitespace-separated words up to an unquoted #,
    -- exactly what the loop below yields, without a call per character.
    local words, hash = {}, text:find("#", 1, true)
    for w in (hash and text:sub(1, hash - 1) or text):gmatch("%S+") do words[#words + 1] = w end
    return words
  end
  local words, current, in_word, quote = {}, {}, false, nil
  local i, n = 1, #text
  while i <= n do
    local ch = text:sub(i, i)
    if quote ~= nil then
      if ch == quote then
        quote = nil
      elseif ch == "\\" then
        if i < n then
          i = i + 1
          current[#current + 1] = text:sub(i, i)
        end
      else
        current[#current + 1] = ch
      end
    elseif ch == "'" or ch == '"' then
      quote, in_word = ch, true
    elseif ch == "\\" then
      -- sbatch checks for a word break before applying an escape: an unquoted backslash
      -- before whitespace (or at the end) vanishes and the word still ends.
      in_word = true
      if i < n and not text:sub(i + 1, i + 1):match("%s") then
        i = i + 1
        current[#current + 1] = text:sub(i, i)
      end
    elseif ch:match("%s") then
      if in_word then
        words[#words + 1] = table.concat(current)
        current, in_word = {}, false
      end
    elseif ch == "#" then
      break
    else
      current[#current + 1] = ch
      in_word = true
    end
    i = i + 1
  end
  if quote ~= nil then return nil, "the " .. quote .. " quote is never closed" end
  if in_word then words[#words + 1] = table.concat(current) end
  return words
end

-- Every prefix of every long option, with the options it could mean (sorted): built once, so
-- resolving a word costs one lookup, not a scan and a sort (a script may have 50,000 of them).
local PREFIXES = {}
for name in pairs(M.LONG_OPTIONS) do
  for i = 0, #name do
    local prefix = name:sub(1, i)
    PREFIXES[prefix] = PREFIXES[prefix] or {}
    table.insert(PREFIXES[prefix], name)
  end
end
for _, names in pairs(PREFIXES) do table.sort(names) end

function M.resolve_long(spelled)
  if M.LONG_OPTIONS[spelled] ~= nil then return spelled end
  local matches = PREFIXES[spelled]
  if matches and #matches == 1 then return matches[1] end
  if matches then
    return nil, "--" .. spelled .. " is ambiguous (could be --" .. table.concat(matches, ", --") .. ")"
  end
  return nil, "--" .. spelled .. " is not an sbatch option"
end

local function parse_short_group(line, word, words, i, options, problems)
  local j = 2
  while j <= #word do
    local letter = word:sub(j, j)
    j = j + 1
    local name = M.SHORT_OPTIONS[letter]
    if name == nil then
      problem(problems, line, "-" .. letter .. " is not an sbatch option")
      return i
    end
    if M.LONG_OPTIONS[name] ~= R then
      options[#options + 1] = { line = line, name = name, value = nil }
    else
      local value
      if j <= #word then
        value = word:sub(j)
      elseif i <= #words then
        value = words[i]
        i = i + 1
      else
        problem(problems, line, "-" .. letter .. " needs a value")
        return i
      end
      options[#options + 1] = { line = line, name = name, value = value }
      return i
    end
  end
  return i
end

function M.parse_options(line, words, options, problems)
  local i = 1
  while i <= #words do
    local word = words[i]
    local b1, b2 = word:byte(1, 2) -- 45 is "-"
    i = i + 1
    if HETJOB_WORDS[word] then
      problem(problems, line, "'" .. word .. "' starts another job component: heterogeneous "
        .. "(multi-component) jobs are not supported")
    elseif b1 == 45 and b2 == 45 and #word > 2 then
      local body = word:sub(3)
      local eq = body:find("=", 1, true)
      local spelled = eq and body:sub(1, eq - 1) or body
      local inline = eq and body:sub(eq + 1) or nil
      local name, why = M.resolve_long(spelled)
      if name == nil then
        problem(problems, line, why)
      else
        local kind = M.LONG_OPTIONS[name]
        if kind == N and eq then
          problem(problems, line, "--" .. name .. " takes no value")
        elseif kind == R and not eq then
          if i > #words then
            problem(problems, line, "--" .. name .. " needs a value")
          else
            options[#options + 1] = { line = line, name = name, value = words[i] }
            i = i + 1
          end
        else
          options[#options + 1] = { line = line, name = name, value = inline }
        end
      end
    elseif b1 == 45 and b2 ~= nil and b2 ~= 45 then
      i = parse_short_group(line, word, words, i, options, problems)
    else
      problem(problems, line, "'" .. word .. "' is not an option (options start with -)")
    end
  end
end

function M.split_lines(text)
  local lines, start = {}, 1
  while true do
    local nl = text:find("\n", start, true)
    if nl == nil then
      if start <= #text then lines[#lines + 1] = text:sub(start) end
      return lines
    end
    lines[#lines + 1] = text:sub(start, nl - 1)
    start = nl + 1
  end
end

-- Parse problems go to `sink` (a problem list) when given, else to parsed.problems.
function M.parse_script(text, sink)
  local parsed = { options = {}, k8s = {}, problems = {}, late_k8s = {}, first_command = 0 }
  if sink then parsed.problems = sink end
  -- One pass over the text: no table of lines, anchored patterns only.
  local pos, size, number = 1, #text, 0
  while pos <= size do
    local nl = text:find("\n", pos, true)
    local line = text:sub(pos, (nl or size + 1) - 1)
    number = number + 1
    if number == 1 and line:find("^#!") then parsed.shebang = line end
    if line:byte(1) ~= 35 and (line:find("^%s*$") or line:find("^%s*#")) then
      -- blank, or a comment with leading blanks: never a directive
    elseif line:byte(1) ~= 35 then
      parsed.first_command = number
      if nl then M.late_k8s_lines(text, nl + 1, number + 1, parsed.late_k8s) end
      break
    else
      local prefix = (line:find("^#SBATCH") and "#SBATCH") or (line:find("^#SLURM") and "#SLURM")
      local foreign = (line:find("^#PBS") and "#PBS") or (line:find("^#BSUB") and "#BSUB")
      if prefix then
        local words, err = M.tokenise(line:sub(#prefix + 1))
        if words == nil then
          problem(parsed.problems, number, prefix .. " line: " .. err)
        else
          M.parse_options(number, words, parsed.options, parsed.problems)
        end
      elseif foreign then
        problem(parsed.problems, number, foreign .. " directives are not accepted (sbatch would "
          .. "translate them into options); write them as #SBATCH lines")
      elseif line:find("^#K8S_") then
        local rest = line:sub(6)
        local eq = rest:find("=", 1, true)
        local name = eq and trim(rest:sub(1, eq - 1)) or ""
        if not eq or name == "" then
          problem(parsed.problems, number, "'" .. trim(line) .. "' is not of the form #K8S_NAME=value")
        else
          parsed.k8s[#parsed.k8s + 1] = { line = number, name = name, value = trim(rest:sub(eq + 1)) }
        end
      end
    end
    if not nl then break end
    pos = nl + 1
  end
  return parsed
end

-- The numbers of the #K8S_ lines from `pos` (the start of line `number`) on, appended to
-- `found`: jumps from one "\n#K8S_" to the next and counts the newlines in between.
function M.late_k8s_lines(text, pos, number, found)
  if text:find("^#K8S_", pos) then found[#found + 1] = number end
  while true do
    local at = text:find("\n#K8S_", pos, true)
    if at == nil then return found end
    local _, newlines = text:sub(pos, at):gsub("\n", "")
    number = number + newlines
    found[#found + 1] = number
    pos = at + 1
  end
end

local function last_option(parsed, name)
  local found
  for _, o in ipairs(parsed.options) do
    if o.name == name then found = o end
  end
  return found
end

local function k8s_value(parsed, name)
  for _, d in ipairs(parsed.k8s) do
    if d.name == name then return d end
  end
end

---------------------------------------------------------------------------------------------
-- Resource values (twins of shared/jobscript/resources.py); each returns value or nil, reason
---------------------------------------------------------------------------------------------

local UNIT_MB = { K = 1 / 1024, [""] = 1, M = 1, G = 1024, T = 1024 * 1024 }

function M.size_mb(value)
  local number, unit = trim(value):match("^([0-9]+)([KMGTkmgt]?)$")
  if number == nil then
    return nil, "'" .. value .. "' is not a size (a number with an optional K, M, G or T)"
  end
  local mb = tonumber(number) * UNIT_MB[unit:upper()]
  return math.ceil(mb)
end

function M.count(value)
  local text = trim(value)
  if not is_digits(text) or tonumber(text) < 1 then
    return nil, "'" .. value .. "' is not a positive whole number"
  end
  return tonumber(text)
end

function M.node_range(value)
  local text = trim(value)
  local dash = text:find("-", 1, true)
  local low, err = M.count(dash and text:sub(1, dash - 1) or text)
  if low == nil then return nil, err end
  local high = low
  if dash then
    high, err = M.count(text:sub(dash + 1))
    if high == nil then return nil, err end
  end
  if high < low then return nil, "'" .. value .. "' is not a node range (min-max)" end
  return { low, high }
end

local function split(text, sep)
  local parts, start = {}, 1
  while true do
    local at = text:find(sep, start, true)
    if at == nil then
      parts[#parts + 1] = text:sub(start)
      return parts
    end
    parts[#parts + 1] = text:sub(start, at - 1)
    start = at + 1
  end
end

function M.gpu_spec(value)
  local total = 0
  for _, part in ipairs(split(value, ",")) do
    local fields = split(trim(part), ":")
    if #fields > 2 or fields[#fields] == "" then
      return nil, "'" .. value .. "' is not a GPU count ([type:]count)"
    end
    local n, err = M.count(fields[#fields])
    if n == nil then return nil, err end
    total = total + n
  end
  return total
end

function M.gres_gpus(value)
  local total = 0
  for _, part in ipairs(split(value, ",")) do
    local text = trim(part)
    if starts(text, "gres/") then text = text:sub(6) end
    if starts(text, "gres:") then text = text:sub(6) end
    local fields = split(text, ":")
    if fields[1] == "gpu" then
      local n, err = 1, nil
      if #fields == 2 then
        if is_digits(fields[2]) then n, err = M.count(fields[2]) end
      elseif #fields == 3 then
        n, err = M.count(fields[3])
      elseif #fields > 3 then
        return nil, "'" .. part .. "' is not a GRES spec (gpu[:type][:count])"
      end
      if n == nil then return nil, err end
      total = total + n
    end
  end
  return total
end

function M.array_tasks(value)
  local text = trim(value)
  local pct = text:find("%", 1, true)
  local spec = pct and text:sub(1, pct - 1) or text
  local limit = pct and text:sub(pct + 1) or ""
  if limit ~= "" and not is_digits(limit) then
    return nil, "'" .. value .. "': the part after % must be a number"
  end
  local total = 0
  for _, raw in ipairs(split(spec, ",")) do
    local part = trim(raw)
    local first, last, step = part:match("^([0-9]+)%-([0-9]+):([0-9]+)$")
    if first == nil then first, last = part:match("^([0-9]+)%-([0-9]+)$") end
    if first == nil then first = part:match("^([0-9]+)$") end
    if first == nil then
      return nil, "'" .. value .. "' is not an array spec (e.g. 0-99%4, 1,3,5, 1-100:2)"
    end
    first = tonumber(first)
    last = last and tonumber(last) or first
    step = step and tonumber(step) or 1
    if last < first or step < 1 then
      return nil, "'" .. raw .. "' is not an ascending range with a positive step"
    end
    total = total + math.floor((last - first) / step) + 1
  end
  return total
end

---------------------------------------------------------------------------------------------
-- Image references (twin of shared/jobscript/images.py)
---------------------------------------------------------------------------------------------

local function valid_host(host)
  for label in (host .. "."):gmatch("([^.]*)%.") do
    if not (label:match("^[A-Za-z0-9]$") or label:match("^[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]$")) then
      return false
    end
  end
  return true
end

local function valid_component(c)
  if not c:match("^[a-z0-9][a-z0-9._-]*$") or not c:match("[a-z0-9]$") then return false end
  for run in c:gmatch("[._-]+") do
    if not (run == "." or run == "_" or run == "__" or run:match("^%-+$")) then return false end
  end
  return true
end

function M.parse_image(text)
  local slash = text:find("/", 1, true)
  local first = slash and text:sub(1, slash - 1) or text
  if not slash or not (first:find(".", 1, true) or first:find(":", 1, true) or first == "localhost") then
    return nil, "image '" .. text .. "' does not name a registry; write it in full, "
      .. "e.g. nas-hub.local:5407/alpine:latest"
  end
  local invalid = "image '" .. text .. "' is not a valid reference "
    .. "(expected host[:port]/name[:tag][@sha256:digest], lowercase name)"
  local host, port = first:match("^([^:]*):([0-9]+)$")
  if host == nil then host = first end
  if (port and #port > 5) or first:match(":") and not port or not valid_host(host) then
    return nil, invalid
  end
  local rest = text:sub(slash + 1)
  local at = rest:find("@", 1, true)
  if at then
    if not rest:sub(at + 1):match("^sha256:" .. string.rep("[0-9a-f]", 64) .. "$") then
      return nil, invalid
    end
    rest = rest:sub(1, at - 1)
  end
  local colon = rest:find(":", 1, true)
  local path, tag = rest, nil
  if colon then path, tag = rest:sub(1, colon - 1), rest:sub(colon + 1) end
  if tag and (#tag > 128 or not tag:match("^[A-Za-z0-9_][A-Za-z0-9_.-]*$")) then
    return nil, invalid
  end
  for _, c in ipairs(split(path, "/")) do
    if not valid_component(c) then return nil, invalid end
  end
  return { registry = first, path = path, tag = tag }
end

---------------------------------------------------------------------------------------------
-- Paths
---------------------------------------------------------------------------------------------

function M.canonical(path, base)
  local joined = starts(path, "/") and path or (base .. "/" .. path)
  local parts = {}
  for c in joined:gmatch("[^/]+") do
    if c == ".." then
      if #parts > 0 then parts[#parts] = nil end
    elseif c ~= "." then
      parts[#parts + 1] = c
    end
  end
  return "/" .. table.concat(parts, "/")
end

-- Each root as is_under compares it: the canonical path, and that path with one "/".
local function root_tops(roots)
  local tops = {}
  for i, root in ipairs(roots) do
    local top = M.canonical(root, "/")
    tops[i] = { top, (top:gsub("/+$", "")) .. "/" }
  end
  return tops
end

local function under_tops(path, tops)
  for _, t in ipairs(tops) do
    if path == t[1] or starts(path, t[2]) then return true end
  end
  return false
end

function M.is_under(path, roots)
  return under_tops(path, root_tops(roots))
end

---------------------------------------------------------------------------------------------
-- The checks (twin of shared/jobscript/validation.py): same order, same words
---------------------------------------------------------------------------------------------

M.REFUSED_OPTIONS = {
  ["uid"] = "it changes who the job runs as",
  ["gid"] = "it changes who the job runs as",
  ["container"] = "it runs the job in Slurm's own container runtime, outside Kubernetes",
  ["get-user-env"] = "it loads a login environment chosen outside the job file",
  ["export-file"] = "it injects environment variables into the job",
  ["wrap"] = "it replaces the script with a command line",
  ["bb"] = "burst buffer requests run outside the job",
  ["bbf"] = "burst buffer requests run outside the job",
  ["network"] = "network fabric requests reach outside the job's Pod",
  ["x11"] = "X11 forwarding reaches outside the job's Pod",
  ["clusters"] = "it sends the job to another cluster, outside this policy",
  ["cluster-constraint"] = "it sends the job to another cluster, outside this policy",
  ["comment"] = "slurm-k8s records its submission key in the job comment",
  ["test-only"] = "the job would not be submitted",
  ["wait"] = "sbatch would block until the job ends",
  ["help"] = "sbatch would print help instead of submitting",
  ["usage"] = "sbatch would print help instead of submitting",
  ["version"] = "sbatch would print its version instead of submitting",
  ["gpus-per-socket"] = "GPUs per socket cannot be checked against the GPU limit; use --gpus",
}
local PATH_OPTIONS = { "chdir", "output", "error", "input" }
local K8S_DIRECTIVES = { IMAGE = true, SHM = true, WORKDIR = true, SCRIPT = true }
local K8S_KNOWN = "#K8S_IMAGE, #K8S_SHM, #K8S_WORKDIR, #K8S_SCRIPT"
local SHELLS = { sh = true, bash = true, dash = true }

M.MAX_PROBLEMS = 20
M.BOM = "\239\187\191"
M.BOM_TEXT = "starts with a byte-order mark (BOM); save the file as UTF-8 without BOM"
M.WRAPPER_SIGNS = { "slurm-k8s-original-script-base64", "-m services.runner" }

function M.too_big_text(size, policy)
  return string.format("the file is %d bytes; the limit is %d bytes", size, policy.max_script_bytes)
end

function M.wrapper_text(sign)
  return "contains '" .. sign .. "', which only slurm-k8s's own wrapper may carry; submit your "
    .. "original script (slurm-k8s wraps it itself)"
end

-- The earliest wrapper sign in a script: line, sign (or nil). One plain find per sign.
function M.wrapper_sign(data)
  local best, sign
  for _, s in ipairs(M.WRAPPER_SIGNS) do
    local at = data:find(s, 1, true)
    if at and (best == nil or at < best) then best, sign = at, s end
  end
  if best == nil then return nil end
  local _, newlines = data:sub(1, best - 1):gsub("\n", "")
  return newlines + 1, sign
end

local function check_bytes(data, problems)
  local nul = data:find("\0", 1, true)
  if nul then
    local _, newlines = data:sub(1, nul - 1):gsub("\n", "")
    problem(problems, newlines + 1, "contains a NUL byte (is it a binary file?)")
  end
  local crlf = data:find("\r\n", 1, true)
  if crlf then
    local _, newlines = data:sub(1, crlf - 1):gsub("\n", "")
    problem(problems, newlines + 1,
      "has Windows line endings (CRLF); save it with Unix (LF) line endings")
  end
end

local function check_option_words(parsed, problems)
  for _, o in ipairs(parsed.options) do
    local reason = M.REFUSED_OPTIONS[o.name]
    if reason then
      problem(problems, o.line, "--" .. o.name .. " is not allowed: " .. reason)
    elseif o.name == "export" and o.value ~= "ALL" and o.value ~= "NONE" then
      problem(problems, o.line, "--export=" .. tostring(o.value) .. " is not allowed: only "
        .. "--export=ALL or --export=NONE (variables could change how slurm-k8s runs the job)")
    elseif o.name == "job-name" and (o.value or ""):find("/", 1, true) then
      problem(problems, o.line, "--job-name must not contain '/' (it can become part of file "
        .. "names through %x)")
    end
  end
end

local READERS = {
  ["cpus-per-task"] = M.count, ["ntasks"] = M.count, ["ntasks-per-node"] = M.count,
  ["mincpus"] = M.count, ["cpus-per-gpu"] = M.count, ["mem"] = M.size_mb,
  ["mem-per-cpu"] = M.size_mb, ["mem-per-gpu"] = M.size_mb, ["gres"] = M.gres_gpus,
  ["gpus"] = M.gpu_spec, ["gpus-per-node"] = M.gpu_spec, ["gpus-per-task"] = M.gpu_spec,
  ["nodes"] = M.node_range, ["array"] = M.array_tasks,
}

-- The larger (value, line) pair, comparing like Python tuples.
local function larger(a, b)
  if b[1] > a[1] or (b[1] == a[1] and b[2] > a[2]) then return b end
  return a
end

local function check_resources(parsed, policy, problems)
  local values = {}
  for _, o in ipairs(parsed.options) do
    local reader = READERS[o.name]
    if reader and o.value ~= nil then
      local v, err = reader(o.value)
      if v == nil then
        problem(problems, o.line, "--" .. o.name .. ": " .. err)
      else
        values[o.name] = { v, o.line, o.value }
      end
    end
  end
  local tasks = values["ntasks"] or values["ntasks-per-node"] or { 1, 0 }
  local gpus = { 0, 0 }
  for _, name in ipairs({ "gres", "gpus", "gpus-per-node" }) do
    if values[name] then gpus = larger(gpus, values[name]) end
  end
  if values["gpus-per-task"] then
    gpus = larger(gpus, { values["gpus-per-task"][1] * tasks[1], values["gpus-per-task"][2] })
  end
  if gpus[1] > policy.max_gpus then
    problem(problems, gpus[2], string.format("asks for %d GPUs; the limit is %d", gpus[1], policy.max_gpus))
  end
  local per_task = values["cpus-per-task"] or { 1, 0 }
  local cpus, cpu_line = tasks[1] * per_task[1], math.max(tasks[2], per_task[2])
  for _, pair in ipairs({ { "cpus-per-gpu", gpus[1] }, { "mincpus", 1 } }) do
    local found = values[pair[1]]
    if found and found[1] * pair[2] > cpus then cpus, cpu_line = found[1] * pair[2], found[2] end
  end
  if cpus > policy.max_cpus then
    problem(problems, cpu_line, string.format("asks for %d CPUs; the limit is %d", cpus, policy.max_cpus))
  end
  for _, pair in ipairs({ { "mem", 1 }, { "mem-per-cpu", cpus }, { "mem-per-gpu", gpus[1] } }) do
    local found = values[pair[1]]
    if found then
      local mb = found[1] * pair[2]
      if pair[1] == "mem" and mb == 0 then
        problem(problems, found[2], string.format("--mem=0 asks for all of a node's memory; "
          .. "the limit is %d MB", policy.max_mem_mb))
      elseif mb > policy.max_mem_mb then
        problem(problems, found[2], string.format("asks for %d MB of memory; the limit is %d MB",
          mb, policy.max_mem_mb))
      end
    end
  end
  local nodes = values["nodes"]
  if nodes and nodes[1][2] > policy.max_nodes then
    problem(problems, nodes[2], "--nodes=" .. nodes[3] .. ": multi-node jobs are not supported yet")
  end
  local array = values["array"]
  if array and array[1] > policy.max_array_tasks then
    problem(problems, array[2], string.format("the job array has %d tasks; the limit is %d",
      array[1], policy.max_array_tasks))
  end
end

local function check_paths(parsed, policy, user, home, problems)
  local roots = roots_for(policy, user)
  local tops = root_tops(roots)
  local shown = table.concat(roots, ", ")
  local base = home
  local chdir = last_option(parsed, "chdir")
  if chdir and chdir.value then
    base = M.canonical((chdir.value:gsub("%%u", function() return user end)), home)
  end
  local by_name = {} -- one pass over the options, then name by name (the Python order)
  for _, name in ipairs(PATH_OPTIONS) do by_name[name] = {} end
  for _, o in ipairs(parsed.options) do
    local list = by_name[o.name]
    if list then list[#list + 1] = o end
  end
  for _, name in ipairs(PATH_OPTIONS) do
    for _, o in ipairs(by_name[name]) do
      do
        local value = (o.value or ""):gsub("%%u", function() return user end)
        local where = M.canonical(value, name == "chdir" and home or base)
        if where ~= "/dev/null" and not under_tops(where, tops) then
          problem(problems, o.line, "--" .. name .. " '" .. tostring(o.value)
            .. "' is outside the folders you may use (" .. shown .. ")")
        end
      end
    end
  end
end

---------------------------------------------------------------------------------------------
-- #K8S_WORKDIR and #K8S_SCRIPT (twins of shared/jobscript/k8s_paths.py)
---------------------------------------------------------------------------------------------

-- Absolute, no ".." component, no control character.
function M.safe_path(value)
  return starts(value, "/") and not ("/" .. value .. "/"):find("/../", 1, true)
    and not value:find("%c")
end

-- The root (normalised, no trailing slash; "/" for the root itself) `value` lies strictly under.
function M.under_root(value, roots)
  for _, root in ipairs(roots) do
    local inner = root:match("^/*(.-)/*$")
    local top = inner ~= "" and ("/" .. inner) or ""
    if starts(value, top .. "/") and value ~= top .. "/" then
      return top ~= "" and top or "/"
    end
  end
end

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- One shell for the whole walk: the user's uid and groups (`id`), then `stat` of each path
-- (the first one followed, the others not): "mode_hex uid gid", "-" when it is missing, "?"
-- when slurmctld (SlurmUser, not root) may not look (then the launcher, root, decides before
-- any Pod). Bounded by `timeout`: slurmctld holds its job lock while this runs.
-- Returns account, seen (a table, false for missing, "unknown").
function M.script_walk(paths, user)
  local parts = { "id -u -- " .. sh_quote(user) .. " 2>/dev/null || echo -",
                  "id -G -- " .. sh_quote(user) .. " 2>/dev/null || echo -" }
  for i, p in ipairs(paths) do
    parts[#parts + 1] = "o=$(LC_ALL=C stat " .. (i == 1 and "-L " or "") .. "-c '%f %u %g' -- "
      .. sh_quote(p) .. " 2>&1) && echo \"$o\" || case $o in *'Permission denied') echo '?' ;; "
      .. "*) echo - ;; esac"
  end
  local pipe = io.popen("timeout 5 sh -c " .. sh_quote(table.concat(parts, "; ")) .. " 2>/dev/null")
  local out = pipe and pipe:read("*a") or ""
  if pipe then pipe:close() end
  local lines = {}
  for line in out:gmatch("[^\n]*\n") do lines[#lines + 1] = line:sub(1, -2) end
  local account = { uid = tonumber(lines[1] or "") or -1, groups = {} }
  for g in (lines[2] or ""):gmatch("%d+") do account.groups[tonumber(g)] = true end
  local seen = {}
  for i = 1, #paths do
    local line = lines[i + 2] or "?"
    local mode, uid, gid = line:match("^(%x+) (%d+) (%d+)$")
    if mode then
      seen[i] = { mode = tonumber(mode, 16), uid = tonumber(uid), gid = tonumber(gid) }
    else
      seen[i] = "unknown"
      if line == "-" then seen[i] = false end
    end
  end
  return account, seen
end

local function file_type(s) return math.floor(s.mode / 4096) % 16 end -- S_IFMT >> 12
local S_DIR, S_REG, S_LNK = 4, 8, 10

-- Whether the class `account` falls in has `bit` (4 read, 1 search/execute).
local function allowed(s, account, bit)
  local shift
  if s.uid == account.uid then shift = 64 elseif account.groups[s.gid] then shift = 8 else shift = 1 end
  local class = math.floor(s.mode / shift) % 8
  return math.floor(class / bit) % 2 == 1
end

M.MAX_SCRIPT_DEPTH = 32 -- one stat per folder, under slurmctld's job lock

-- Why #K8S_SCRIPT=value is refused for `user`, or nil; `walk` is M.script_walk or a test's fake.
function M.script_problem(value, roots, user, walk)
  local shown = "#K8S_SCRIPT '" .. value .. "'"
  if not M.safe_path(value) then
    return shown .. " must be an absolute path without '..' or control characters"
  end
  local _, slashes = value:gsub("/", "")
  if slashes > M.MAX_SCRIPT_DEPTH then
    return shown .. " is more than " .. M.MAX_SCRIPT_DEPTH .. " folders deep"
  end
  local root = M.under_root(value, roots)
  if root == nil then
    return shown .. " is outside the folders programs may come from (" .. table.concat(roots, ", ") .. ")"
  end
  local names, paths = {}, { root }
  local current = root
  for part in value:sub(#root + 1):gmatch("[^/]+") do
    names[#names + 1] = part
    current = (current == "/" and "" or current) .. "/" .. part
    paths[#paths + 1] = current
  end
  local account, seen = (walk or M.script_walk)(paths, user)
  for i = 1, #names do
    local s = seen[i]
    if s == "unknown" then return nil end
    if not s or file_type(s) ~= S_DIR then return shown .. " does not exist" end
    if not allowed(s, account, 1) then
      return shown .. " cannot be read by " .. user .. " (no access to " .. paths[i] .. ")"
    end
    local next_seen = seen[i + 1]
    if type(next_seen) == "table" and file_type(next_seen) == S_LNK then
      if i == #names then return shown .. " is a symlink; name the file itself" end
      return shown .. " goes through the symlink " .. paths[i + 1] .. "; name the file itself"
    end
  end
  local s = seen[#paths]
  if s == "unknown" then return nil end
  if not s then return shown .. " does not exist" end
  if file_type(s) ~= S_REG then return shown .. " is not a regular file" end
  if not allowed(s, account, 4) then
    return shown .. " cannot be read by " .. user .. string.format(" (mode %04o)", s.mode % 4096)
  end
end

local function check_k8s(parsed, policy, problems, user, walk)
  local seen = {}
  for _, d in ipairs(parsed.k8s) do
    if not K8S_DIRECTIVES[d.name] then
      problem(problems, d.line, "unknown directive #K8S_" .. d.name .. " (known: " .. K8S_KNOWN .. ")")
    elseif seen[d.name] then
      problem(problems, d.line, string.format("#K8S_%s is given twice (first on line %d)", d.name, seen[d.name]))
    else
      seen[d.name] = d.line
    end
  end
  for _, line in ipairs(parsed.late_k8s) do
    problem(problems, line, string.format("this #K8S_ line comes after the first command (line "
      .. "%d) and is not read; move it above that line", parsed.first_command))
  end
  local image = k8s_value(parsed, "IMAGE")
  if image == nil then
    problem(problems, 0, "no #K8S_IMAGE= line: name the container image that runs the job, "
      .. "e.g. #K8S_IMAGE=nas-hub.local:5407/alpine:latest")
  else
    local ref, err = M.parse_image(image.value)
    if ref == nil then
      problem(problems, image.line, "#K8S_IMAGE: " .. err)
    else
      local allowed = false
      for _, r in ipairs(policy.allowed_registries) do
        if r == ref.registry then allowed = true end
      end
      if not allowed then
        problem(problems, image.line, "#K8S_IMAGE registry '" .. ref.registry .. "' is not allowed "
          .. "(allowed: " .. table.concat(policy.allowed_registries, " ") .. ")")
      end
    end
  end
  local shm = k8s_value(parsed, "SHM")
  if shm then
    local mb, err = M.size_mb(shm.value)
    if mb == nil then
      problem(problems, shm.line, "#K8S_SHM: " .. err)
    elseif mb > policy.max_shm_mb then
      problem(problems, shm.line, string.format("#K8S_SHM asks for %d MB; the limit is %d MB",
        mb, policy.max_shm_mb))
    end
  end
  local workdir = k8s_value(parsed, "WORKDIR")
  if workdir and not M.safe_path(workdir.value) then
    problem(problems, workdir.line, "#K8S_WORKDIR '" .. workdir.value
      .. "' must be an absolute path without '..' or control characters")
  end
  local script = k8s_value(parsed, "SCRIPT")
  if script then
    local why = M.script_problem(script.value, policy.script_roots, user, walk)
    if why then problem(problems, script.line, why) end
  end
end

local function is_shell(shebang)
  if shebang == nil then return false end
  local words = split_words(shebang:sub(3))
  if #words == 0 then return false end
  local program = basename(words[1])
  if program == "env" and #words > 1 then program = basename(words[2]) end
  return SHELLS[program] == true
end

-- `bash -n` parses without executing; env -i so a non-interactive bash has no $BASH_ENV.
-- The exit status is echoed because Lua 5.1's pipe:close() does not return it. Bounded by
-- CPU time (`ulimit -t`, soft = hard: SIGKILL) where `timeout` would fork once more while
-- slurmctld holds its job lock: parsing a regular file waits on nothing else.
M.SYNTAX_CPU_S = 10
function M.bash_syntax(data)
  local path = os.tmpname()
  local handle = io.open(path, "wb")
  if handle == nil then return {} end
  handle:write(data)
  handle:close()
  local pipe = io.popen("ulimit -t " .. M.SYNTAX_CPU_S .. "; env -i PATH=/usr/bin:/bin LC_ALL=C "
    .. "bash -n '" .. path .. "' 2>&1; echo \"slurmk8s-rc=$?\"")
  local out = pipe and pipe:read("*a") or ""
  if pipe then pipe:close() end
  os.remove(path)
  local code = tonumber(out:match("slurmk8s%-rc=(%d+)%s*$") or "0")
  out = out:gsub("slurmk8s%-rc=%d+%s*$", "")
  local problems = {}
  if code == 137 or code == 152 then -- SIGKILL or SIGXCPU: out of CPU time
    problem(problems, 0, "the shell syntax check (bash -n) took too long")
    return problems
  end
  if code == 127 then return problems end -- no bash on this host: nothing to say
  for text in out:gmatch("[^\n]+") do
    local line, message = text:match("line (%d+): (.*)")
    if line then
      problem(problems, tonumber(line), "shell syntax: " .. message)
    elseif trim(text) ~= "" then
      problem(problems, 0, "shell syntax: " .. trim(text))
    end
  end
  if code ~= 0 and #problems == 0 then
    problem(problems, 0, "the shell syntax check (bash -n) failed")
  end
  return problems
end

-- The problems of a script, ordered by line (at most M.MAX_PROBLEMS, then "... and N more"):
-- the twin of validation.check_script. Returns problems, parsed (nil when not parsed).
function M.check_script(data, policy, user, home, syntax, walk)
  if #data > policy.max_script_bytes then
    -- Refused before a byte is parsed: the size alone decides, whatever the content.
    return { { line = 0, message = M.too_big_text(#data, policy) } }, nil
  end
  if starts(data, M.BOM) then
    return { { line = 1, message = M.BOM_TEXT } }, nil
  end
  local problems = M.problem_list(M.MAX_PROBLEMS)
  check_bytes(data, problems)
  local sign_line, sign = M.wrapper_sign(data)
  if sign_line then problem(problems, sign_line, M.wrapper_text(sign)) end
  -- "#!" alone names nothing to run: the kernel refuses to exec it (ENOEXEC).
  if not starts(data, "#!") or not data:match("^#![^\n]*"):sub(3):find("%S") then
    problem(problems, 1, "the first line must name an interpreter, e.g. #!/bin/bash")
  end
  local parsed = M.parse_script(data, problems)
  check_option_words(parsed, problems)
  check_resources(parsed, policy, problems)
  check_paths(parsed, policy, user, home, problems)
  check_k8s(parsed, policy, problems, user, walk)
  syntax = syntax == nil and M.bash_syntax or syntax
  if syntax and policy.bash_syntax_check and is_shell(parsed.shebang) and not data:find("\0", 1, true) then
    for _, p in ipairs(syntax(data)) do problem(problems, p.line, p.message) end
  end
  return problems:result(), parsed
end

-- Whether any line starts with #K8S_ (two plain finds: no table of lines).
function M.uses_k8s(data)
  return starts(data, "#K8S_") or data:find("\n#K8S_", 1, true) ~= nil
end

function M.format_problem(p)
  if p.line == 0 then return "file: " .. p.message end
  return "line " .. p.line .. ": " .. p.message
end

---------------------------------------------------------------------------------------------
-- The job's effective values: what the command line or SBATCH_* variables set beside the script
---------------------------------------------------------------------------------------------

local NO_VAL16, NO_VAL = 65534, 4294967294

local function is_set(value, no_val)
  return type(value) == "number" and value < no_val
end

local function tres_gpus(spec)
  if spec == nil or spec == "" then return 0 end
  return M.gres_gpus(spec) or 0
end

local function mentions(problems, pattern)
  for _, p in ipairs(problems) do
    if p.message:find(pattern) then return true end
  end
  return false
end

-- Problems the script's directives did not show (the script said -c 1, the command line -c 64).
function M.check_job_desc(job_desc, policy, user, problems, modifying)
  local found = {}
  local where = modifying and " (scontrol update)"
    or " (set outside the script, e.g. on the sbatch command line)"
  local tasks = is_set(job_desc.num_tasks, NO_VAL) and job_desc.num_tasks or 1
  local per_task = is_set(job_desc.cpus_per_task, NO_VAL16) and job_desc.cpus_per_task or 1
  local gpus = math.max(tres_gpus(job_desc.tres_per_node), tres_gpus(job_desc.tres_per_job),
    tres_gpus(job_desc.tres_per_task) * tasks)
  if gpus > policy.max_gpus and not mentions(problems, "GPUs; the limit") then
    problem(found, 0, string.format("asks for %d GPUs; the limit is %d", gpus, policy.max_gpus) .. where)
  end
  -- cpus_per_tres / mem_per_tres read like "gres:gpu:2" / "gres:gpu:9216" (per GPU, MB).
  -- pn_min_cpus is --mincpus on the command line and MinCPUsNode in scontrol update.
  local cpus = math.max(tasks * per_task, is_set(job_desc.min_cpus, NO_VAL) and job_desc.min_cpus or 0,
    is_set(job_desc.pn_min_cpus, NO_VAL16) and job_desc.pn_min_cpus or 0,
    tres_gpus(job_desc.cpus_per_tres) * gpus)
  if cpus > policy.max_cpus and not mentions(problems, "CPUs; the limit") then
    problem(found, 0, string.format("asks for %d CPUs; the limit is %d", cpus, policy.max_cpus) .. where)
  end
  local mem = job_desc.min_mem_per_node
  if type(job_desc.min_mem_per_cpu) == "number" then mem = job_desc.min_mem_per_cpu * cpus end
  local per_gpu = tres_gpus(job_desc.mem_per_tres) * gpus
  if per_gpu > 0 and per_gpu > (mem or 0) then mem = per_gpu end
  if type(mem) == "number" and (mem == 0 or mem > policy.max_mem_mb)
      and not mentions(problems, "memory") then
    problem(found, 0, string.format("asks for %s of memory; the limit is %d MB",
      mem == 0 and "all of a node's" or string.format("%d MB", mem), policy.max_mem_mb) .. where)
  end
  if is_set(job_desc.min_nodes, NO_VAL) and job_desc.min_nodes > policy.max_nodes
      or is_set(job_desc.max_nodes, NO_VAL) and job_desc.max_nodes > policy.max_nodes then
    if not mentions(problems, "multi%-node") then
      problem(found, 0, "multi-node jobs are not supported yet" .. where)
    end
  end
  if job_desc.array_inx and job_desc.array_inx ~= "" then
    local n = M.array_tasks(job_desc.array_inx)
    if n and n > policy.max_array_tasks and not mentions(problems, "job array") then
      problem(found, 0, string.format("the job array has %d tasks; the limit is %d", n,
        policy.max_array_tasks) .. where)
    end
  end
  if tres_gpus(job_desc.tres_per_socket) > 0 and not mentions(problems, "%-%-gpus%-per%-socket") then
    problem(found, 0, "--gpus-per-socket is not allowed: " .. M.REFUSED_OPTIONS["gpus-per-socket"]
      .. where)
  end
  if job_desc.container and job_desc.container ~= "" and not mentions(problems, "%-%-container") then
    problem(found, 0, "--container is not allowed: " .. M.REFUSED_OPTIONS["container"] .. where)
  end
  local work_dir = job_desc.work_dir or "/"
  local roots = roots_for(policy, user)
  -- Unchanged (nil) on modify; on submit, nil means Slurm's default slurm-%j.out in work_dir.
  local default_out = not modifying and "slurm-%j.out" or nil
  local files = { { "output", job_desc.std_out or default_out }, { "error", job_desc.std_err },
                  { "input", job_desc.std_in } }
  for _, f in ipairs(files) do
    if f[2] and f[2] ~= "" then
      local path = M.canonical((f[2]:gsub("%%u", function() return user end)), work_dir)
      if path ~= "/dev/null" and not M.is_under(path, roots)
          and not mentions(problems, "%-%-" .. f[1] .. " ") then
        problem(found, 0, "--" .. f[1] .. " '" .. f[2] .. "' (in " .. work_dir .. ") is outside "
          .. "the folders you may use (" .. table.concat(roots, ", ") .. ")")
      end
    end
  end
  return found
end

---------------------------------------------------------------------------------------------
-- The wrapper (twin of shared/jobscript/wrapping.py)
---------------------------------------------------------------------------------------------

M.WRAPPER_HEAD = "#!/bin/sh\n"
  .. "# slurm-k8s: this job runs in a Kubernetes Pod; this batch step only follows it.\n"
  .. "exec /opt/slurm-k8s/venv/bin/python -m services.runner\n"
M.ORIGINAL_MARKER = "# slurm-k8s-original-script-base64:"

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Arithmetic only: Debian's slurmctld links Lua 5.1, which has no integer or bit operators.
-- Two base64 characters for each 12-bit value: a 3-byte group is two lookups.
local B64_PAIRS = {}
for n = 0, 4095 do
  local hi, lo = math.floor(n / 64), n % 64
  B64_PAIRS[n] = B64:sub(hi + 1, hi + 1) .. B64:sub(lo + 1, lo + 1)
end

function M.base64(data)
  local out, k, floor, byte = {}, 0, math.floor, string.byte
  local whole = #data - #data % 3
  for i = 1, whole, 3 do
    local a, b, c = byte(data, i, i + 2)
    local high = a * 16 + floor(b / 16)
    k = k + 1
    out[k] = B64_PAIRS[high] .. B64_PAIRS[(b % 16) * 256 + c]
  end
  for i = whole + 1, #data, 3 do -- the last 1 or 2 bytes, padded
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144)
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
      .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

function M.wrap_script(original)
  local encoded = M.base64(original)
  local lines = { M.WRAPPER_HEAD, M.ORIGINAL_MARKER, "\n" }
  for i = 1, #encoded, 76 do
    lines[#lines + 1] = "# " .. encoded:sub(i, i + 75) .. "\n"
  end
  return table.concat(lines)
end

---------------------------------------------------------------------------------------------
-- Who is submitting
---------------------------------------------------------------------------------------------

function M.user_name(job_desc, submit_uid)
  if job_desc.user_name and job_desc.user_name ~= "" then return job_desc.user_name end
  local passwd = io.open("/etc/passwd", "r")
  if passwd then
    for line in passwd:lines() do
      local name, uid = line:match("^([^:]*):[^:]*:(%d+):")
      if uid and tonumber(uid) == submit_uid then
        passwd:close()
        return name
      end
    end
    passwd:close()
  end
  local pipe = io.popen("id -nu " .. string.format("%d", submit_uid) .. " 2>/dev/null")
  local name = pipe and trim(pipe:read("*a") or "") or ""
  if pipe then pipe:close() end
  return name ~= "" and name or string.format("%d", submit_uid)
end

---------------------------------------------------------------------------------------------
-- The decision for one submission (testable without slurmctld)
---------------------------------------------------------------------------------------------

M.ACCEPTED_MARK = "slurmk8s-accepted" -- twin of wrapping.ACCEPTED_MARK
M.COMMENT_MARK = "slurmk8s"
M.KEY_PATTERN = "^slurmk8s%-key=[0-9a-f]+$"
-- The key may be followed by the validator's trace context (shared/jobtrace.py), which only
-- links the job's traces and decides nothing: W3C version 00, lower-case hex.
M.TRACED_KEY_PATTERN = "^slurmk8s%-key=[0-9a-f]+; traceparent=00%-" .. string.rep("[0-9a-f]", 32)
  .. "%-" .. string.rep("[0-9a-f]", 16) .. "%-[0-9a-f][0-9a-f]$"
M.ADMIN_COMMENT_TEXT = "AdminComment is written by Slurm administrators and slurm-k8s only; "
  .. "submit the job without it"
M.COMMENT_TEXT = "--comment is not allowed: " .. M.REFUSED_OPTIONS["comment"]
  .. " (set outside the script, e.g. on the sbatch command line)"

function M.min_uid_text(policy)
  return string.format("slurm-k8s jobs run as their owner; root and system accounts "
    .. "(uid < %d or > %d) cannot submit them", policy.min_uid, policy.max_uid)
end

local function has_text(value)
  return type(value) == "string" and value ~= ""
end

-- Checks for every job, plain ones too, before the policy file is read: a forged wrapper, an
-- AdminComment from a non-root submitter. Returns nil or the problems.
function M.decide_any(job_desc, submit_uid)
  if has_text(job_desc.admin_comment) and submit_uid ~= 0 then
    return { { line = 0, message = M.ADMIN_COMMENT_TEXT } }
  end
  local script = job_desc.script
  if script == nil then return nil end
  local line, sign = M.wrapper_sign(script)
  if line then return { { line = line, message = M.wrapper_text(sign) } } end
  return nil
end

-- Returns nil when the job may go on (job_desc.script possibly wrapped), or the problems.
-- Call decide_any first; this is for #K8S_ jobs.
function M.decide(job_desc, policy, user, syntax, submit_uid)
  local script = job_desc.script
  if script == nil or not M.uses_k8s(script) then return nil end -- plain Slurm job
  submit_uid = submit_uid or 0
  local owner = type(job_desc.user_id) == "number" and job_desc.user_id or submit_uid
  local function system(uid) return uid < policy.min_uid or uid > policy.max_uid end
  if system(submit_uid) or system(owner) then
    return { { line = 0, message = M.min_uid_text(policy) } }
  end
  local problems = M.check_script(script, policy, user, job_desc.work_dir or "/", syntax)
  for _, p in ipairs(M.check_job_desc(job_desc, policy, user, problems)) do
    problems[#problems + 1] = p
  end
  -- The Comment holds the validator's key (slurmk8s-key=<hex>) or nothing: anything else
  -- (sbatch --comment=x) would replace it.
  if has_text(job_desc.comment) and not job_desc.comment:match(M.KEY_PATTERN)
      and not job_desc.comment:match(M.TRACED_KEY_PATTERN)
      and not mentions(problems, "^%-%-comment ") then
    problem(problems, 0, M.COMMENT_TEXT)
  end
  if #problems > 0 then return problems end
  local duplicate = M.claim_key(job_desc.comment)
  if duplicate then return { duplicate } end
  job_desc.script = M.wrap_script(script)
  -- The mark users cannot write: what makes this a slurm-k8s job for slurm_job_modify and
  -- the services. The Comment keeps the validator's key, or gets a plain marker.
  job_desc.admin_comment = M.ACCEPTED_MARK
  if not has_text(job_desc.comment) then job_desc.comment = M.COMMENT_MARK end
  return nil
end

M.DUPLICATE_TEXT = "slurm-k8s: this submission key was submitted moments ago"
M.KEY_TTL_S = 120
M.clock = os.time
-- Lives as long as slurmctld's Lua state (reloaded only when this file changes).
local recent_keys = {}
local last_sweep = 0

-- The controller is where two copies of one NAS submission meet in order: an sbatch that
-- timed out while slurmctld hung may still be processed after it resumes, right when the
-- validator's retry arrives. Whichever comes second is refused here; the validator then finds
-- the first by its key. The TTL only has to cover that meeting, and it lets a key through
-- again if its first job was refused after this plugin (so a retry can still succeed).
function M.claim_key(comment)
  local key = type(comment) == "string" and comment:match("^slurmk8s%-key=([0-9a-f]+)")
  if not key then return nil end
  local now = M.clock()
  -- Forget old keys at most once per TTL, not on every submission: a flood of keyed
  -- submissions must not make each one scan all the others.
  if now - last_sweep > M.KEY_TTL_S then
    for k, at in pairs(recent_keys) do
      if now - at > M.KEY_TTL_S then recent_keys[k] = nil end
    end
    last_sweep = now
  end
  if recent_keys[key] and now - recent_keys[key] <= M.KEY_TTL_S then
    return { line = 0, message = M.DUPLICATE_TEXT .. " (" .. key .. "); not submitting it twice" }
  end
  recent_keys[key] = now
  return nil
end

-- A slurm-k8s job is one this plugin accepted: its AdminComment starts with the mark (later
-- notes keep it as a prefix). The Comment is no proof: its owner can set it.
function M.is_slurm_k8s_job(job_rec)
  return type(job_rec.admin_comment) == "string" and starts(job_rec.admin_comment, M.ACCEPTED_MARK)
end

-- `scontrol update` by the job's owner must not take a checked job outside the policy (users
-- may change nodes, CPUs, memory, GRES, paths of their pending jobs). Root (the collector,
-- recording a failure reason in the comment) and plain Slurm jobs are not checked.
function M.decide_modify(job_desc, job_rec, policy, user, modify_uid)
  if modify_uid == 0 or not M.is_slurm_k8s_job(job_rec) then return nil end
  local problems = {}
  if job_desc.comment ~= nil then
    problem(problems, 0, "the comment of a slurm-k8s job holds its submission key and "
      .. "cannot be changed")
  end
  local view = setmetatable({}, { __index = job_desc })
  view.work_dir = job_desc.work_dir or job_rec.work_dir or "/"
  if job_desc.work_dir and not M.is_under(M.canonical(job_desc.work_dir, "/"), roots_for(policy, user)) then
    problem(problems, 0, "--chdir '" .. job_desc.work_dir .. "' is outside the folders you may use ("
      .. table.concat(roots_for(policy, user), ", ") .. ")")
  end
  for _, p in ipairs(M.check_job_desc(view, policy, user, problems, true)) do
    problems[#problems + 1] = p
  end
  if #problems > 0 then return problems end
  return nil
end

local function policy_path()
  return os.getenv("SLURMK8S_POLICY") or M.DEFAULT_POLICY_PATH
end

local function refuse(who, problems)
  local lines = {}
  for i, p in ipairs(problems) do lines[i] = M.format_problem(p) end
  slurm.log_info("slurm-k8s: refused a job of %s: %s", who, table.concat(lines, "; "))
  slurm.log_user("%s", table.concat(lines, "\n"))
  return slurm.ERROR
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  local any = M.decide_any(job_desc, submit_uid)
  if any then return refuse(string.format("uid %d", submit_uid), any) end
  -- Plain Slurm jobs never depend on our policy file, not even on it being readable.
  if job_desc.script == nil or not M.uses_k8s(job_desc.script) then return slurm.SUCCESS end
  local policy, err = M.load_policy(policy_path())
  if policy == nil then
    slurm.log_error("slurm-k8s: %s", err)
    slurm.log_user("slurm-k8s: the submit policy cannot be read; ask an administrator")
    return slurm.ERROR
  end
  local user = M.user_name(job_desc, submit_uid)
  local problems = M.decide(job_desc, policy, user, nil, submit_uid)
  if problems == nil then return slurm.SUCCESS end
  return refuse(user, problems)
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  if modify_uid == 0 or not M.is_slurm_k8s_job(job_rec) then return slurm.SUCCESS end
  local policy, err = M.load_policy(policy_path())
  if policy == nil then
    slurm.log_error("slurm-k8s: %s", err)
    return slurm.ERROR
  end
  local user = M.user_name({}, job_rec.user_id or modify_uid)
  local problems = M.decide_modify(job_desc, job_rec, policy, user, modify_uid)
  if problems == nil then return slurm.SUCCESS end
  local lines = {}
  for i, p in ipairs(problems) do lines[i] = M.format_problem(p) end
  -- Slurm 22.05 does not pass log_user text back from job_modify (fixed in 23.02); the
  -- controller's log has the reasons.
  slurm.log_info("slurm-k8s: refused a change to job %s by uid %d: %s",
    tostring(job_rec.job_id), modify_uid, table.concat(lines, "; "))
  slurm.log_user("%s", table.concat(lines, "\n"))
  return slurm.ERROR
end

if slurm ~= nil and type(slurm.slurmk8s_expose) == "function" then slurm.slurmk8s_expose(M) end

return slurm and slurm.SUCCESS or 0
