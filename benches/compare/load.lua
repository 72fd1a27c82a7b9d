-- wrk script of the comparison: cycles over a list of URL paths and stops after a number of
-- answers, whichever of that and wrk's -d comes first.
--
--   wrk -t T -c C -d 20s --timeout 120s -s load.lua http://127.0.0.1:PORT -- URLFILE MAX BASE T
--
-- URLFILE: one path per line (the corpus in manifest order). Every "{tok}" in a path becomes a
-- 6-hex-digit token unique within the run (BASE + request number, so runs with distinct BASEs
-- never repeat one): that is what makes cold URLs unique. Request k of thread t is global
-- number k*T + t; it takes line (number mod lines), so each thread walks the whole corpus and
-- the threads interleave.
-- MAX: stop once this many answers arrived (split evenly over the threads); wrk itself still
-- waits for -d to pass, so the duration printed is measured here (see done).
-- Prints one line: RESULT requests=.. duration_us=.. p50_us=.. p99_us=.. non200=.. errors=..
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  urls = {}
  for line in io.lines(args[1]) do
    if #line > 0 then urls[#urls + 1] = line end
  end
  local nthreads = tonumber(args[4]) or 1
  max = math.ceil((tonumber(args[2]) or 1e12) / nthreads)
  base = tonumber(args[3]) or 0
  step = nthreads
  n, answers, non200 = 0, 0, 0
  static = nil
  if #urls == 1 and not urls[1]:find("{tok}", 1, true) then
    static = wrk.format("GET", urls[1])
  end
end

-- wall clock in microseconds (wrk's Lua has none finer than os.time; two forks per thread)
local function now_us()
  local p = io.popen("date +%s%6N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

function request()
  if not t_start then t_start = now_us() end
  if static then return static end
  local k = n * step + tid
  n = n + 1
  local path = urls[k % #urls + 1]
  local tok = string.format("%06x", (base + k) % 16777215)
  return wrk.format("GET", (path:gsub("{tok}", tok)))
end

function response(status, headers, body)
  answers = answers + 1
  if status ~= 200 then non200 = non200 + 1 end
  if answers >= max and not t_end then
    t_end = now_us()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  -- wrk reports -d as the duration even when every thread stopped early at MAX: then the
  -- duration is from the first request to the last thread's MAXth answer.
  local bad, first, last, all_stopped = 0, nil, 0, true
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    local s, e = t:get("t_start"), t:get("t_end")
    if s and (not first or s < first) then first = s end
    if e then last = math.max(last, e) else all_stopped = false end
  end
  local duration = summary.duration
  if all_stopped and first then duration = last - first end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non200=%d errors=%d\n",
    summary.requests, duration, latency:percentile(50), latency:percentile(99), bad,
    e.connect + e.read + e.write + e.timeout))
end
