-- wrk script: each request GETs $PATH_PATTERN with a random id from $IDS_FILE (one a line),
-- so that requests spread over many orders or customers instead of one cached row.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do
  if #line > 0 then ids[#ids + 1] = line end
end
local pattern = os.getenv("PATH_PATTERN")
local n = 0

function setup(thread)
  n = n + 1
  thread:set("seed", n)
end

function init(args)
  math.randomseed(os.time() + (seed or 0) * 7919)
end

function request()
  return wrk.format("GET", string.format(pattern, ids[math.random(#ids)]))
end
