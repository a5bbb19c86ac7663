-- Test driver: loads slurm/job_submit.lua outside slurmctld with a stub `slurm` table.
-- usage: lua driver.lua JOB_SUBMIT_LUA MODE POLICY USER WORK_DIR SCRIPT_FILE [field=value...]
--   check  : print "line<TAB>message" for each problem of the script
--   wrap   : print the wrapper for the script, byte for byte
--   submit : call slurm_job_submit with a job_desc built from the fields ("submit_uid=N" is the
--            submitting uid, 2001 by default); print "rc=<code>", "comment=<comment>",
--            "admin_comment=<admin_comment>", the user messages, then "script:" and the
--            (maybe wrapped) script
--   constants : print the constants the Python twin must share, "NAME=value" per line
--   modify : call slurm_job_modify; fields "rec.NAME=v" go to job_rec, "uid=N" is the
--            modifying uid; prints "rc=<code>" and the user messages
local lua_file, mode, policy_path, user, work_dir, script_file = arg[1], arg[2], arg[3], arg[4], arg[5], arg[6]
local M
local messages = {}
slurm = {
  SUCCESS = 0, ERROR = -1,
  log_info = function() end, log_error = function() end, log_debug = function() end,
  log_user = function(fmt, ...) messages[#messages + 1] = string.format(fmt, ...) end,
  slurmk8s_expose = function(m) M = m end,
}
dofile(lua_file)
local handle = assert(io.open(script_file, "rb"))
local script = handle:read("*a")
handle:close()
if mode == "check" then
  local policy = assert(M.load_policy(policy_path))
  local problems = M.check_script(script, policy, user, work_dir)
  for _, p in ipairs(problems) do io.write(p.line, "\t", p.message, "\n") end
elseif mode == "constants" then
  io.write("ACCEPTED_MARK=", M.ACCEPTED_MARK, "\n", "MAX_PROBLEMS=", M.MAX_PROBLEMS, "\n")
  io.write("WRAPPER_SIGNS=", table.concat(M.WRAPPER_SIGNS, "|"), "\n")
elseif mode == "wrap" then
  io.write(M.wrap_script(script))
elseif mode == "submit" then
  M.DEFAULT_POLICY_PATH = policy_path
  local job_desc = { script = script, work_dir = work_dir, user_name = user }
  local submit_uid = 2001
  for i = 7, #arg do
    local key, value = arg[i]:match("^([^=]+)=(.*)$")
    if key == "submit_uid" then
      submit_uid = tonumber(value)
    else
      job_desc[key] = tonumber(value) or value
    end
  end
  local rc = slurm_job_submit(job_desc, {}, submit_uid)
  io.write("rc=", rc, "\n", "comment=", tostring(job_desc.comment), "\n")
  io.write("admin_comment=", tostring(job_desc.admin_comment), "\n")
  for _, m in ipairs(messages) do io.write(m, "\n") end
  io.write("script:\n", job_desc.script)
elseif mode == "twice" or mode == "twice-later" then
  -- the same submission twice in one slurmctld Lua state; "-later" lets the key's TTL pass
  M.DEFAULT_POLICY_PATH = policy_path
  local now = 1000
  M.clock = function() return now end
  for round = 1, 2 do
    local job_desc = { script = script, work_dir = work_dir, user_name = user }
    for i = 7, #arg do
      local key, value = arg[i]:match("^([^=]+)=(.*)$")
      job_desc[key] = tonumber(value) or value
    end
    messages = {}
    io.write("rc=", slurm_job_submit(job_desc, {}, 2001), "\n")
    for _, m in ipairs(messages) do io.write(m, "\n") end
    if mode == "twice-later" then now = now + M.KEY_TTL_S + 1 end
  end
elseif mode == "modify" then
  M.DEFAULT_POLICY_PATH = policy_path
  local job_desc, job_rec, uid = {}, { user_id = 2001, work_dir = work_dir }, 2001
  for i = 7, #arg do
    local key, value = arg[i]:match("^([^=]+)=(.*)$")
    if key == "uid" then
      uid = tonumber(value)
    elseif key:sub(1, 4) == "rec." then
      job_rec[key:sub(5)] = tonumber(value) or value
    else
      job_desc[key] = tonumber(value) or value
    end
  end
  local rc = slurm_job_modify(job_desc, job_rec, {}, uid)
  io.write("rc=", rc, "\n")
  for _, m in ipairs(messages) do io.write(m, "\n") end
end
