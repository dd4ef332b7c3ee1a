"""`python -m tests.mutation_score STATS.json`: the mutation score of a `make mutate` run, from mutmut's CI stats."""

import json
import sys


def main(path: str) -> None:
    stats = json.loads(open(path).read())
    caught = stats["killed"] + stats["timeout"] + stats["segfault"]
    judged = caught + stats["survived"] + stats["suspicious"]
    unjudged = stats["total"] - judged - stats["no_tests"] - stats["skipped"]
    print(f"mutants: {stats['total']}, judged {judged}: caught {caught} (killed {stats['killed']}, "
          f"timed out {stats['timeout']}), survived {stats['survived']}, suspicious {stats['suspicious']}; "
          f"no covering test {stats['no_tests']}; not reached in the time allowed {unjudged}")
    print(f"mutation score: {caught / judged:.1%}" if judged else "mutation score: nothing judged")


if __name__ == "__main__":
    main(sys.argv[1])
