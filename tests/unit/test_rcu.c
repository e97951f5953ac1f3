/* QSBR (base/rcu.c): an object retired while a reader is online is freed only after that
 * reader passes a quiescent state or goes offline — and a reader slot taken again by a new
 * registration (pool workers register once per job) counts as having moved on. */
#include "test_common.h"

#include <pthread.h>
#include <semaphore.h>

#include "base/rcu.h"

static int freed;
static void count_free(void *p)
{
    (void)p;
    freed++;
}

/* A reader thread driven step by step from the test: each post of `go` runs one step. */
typedef struct {
    sem_t go, done;
    int steps[8];
    int n;
} reader_t;

enum { REGISTER, QUIESCENT, UNREGISTER };

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    for (int i = 0; i < r->n; i++) {
        sem_wait(&r->go);
        if (r->steps[i] == REGISTER)
            bs_rcu_register();
        else if (r->steps[i] == QUIESCENT)
            bs_rcu_quiescent();
        else
            bs_rcu_unregister();
        sem_post(&r->done);
    }
    return NULL;
}

static void step(reader_t *r)
{
    sem_post(&r->go);
    sem_wait(&r->done);
}

static void test_waits_for_an_online_reader(void **state)
{
    (void)state;
    reader_t r = {.steps = {REGISTER, QUIESCENT, UNREGISTER}, .n = 3};
    sem_init(&r.go, 0, 0);
    sem_init(&r.done, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    freed = 0;
    step(&r); /* online */
    static int obj;
    bs_rcu_retire(&obj, count_free);
    bs_rcu_reclaim();
    assert_int_equal(freed, 0); /* the reader may still hold it */
    step(&r);                   /* quiescent */
    bs_rcu_reclaim();
    assert_int_equal(freed, 1);
    step(&r);
    pthread_join(t, NULL);
}

static void test_a_new_registration_in_the_same_slot_is_progress(void **state)
{
    (void)state;
    /* As a pool worker does: register, run a job (no quiescent state), unregister, and the
     * next job registers again, likely into the same slot. */
    reader_t r = {.steps = {REGISTER, UNREGISTER, REGISTER, UNREGISTER}, .n = 4};
    sem_init(&r.go, 0, 0);
    sem_init(&r.done, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    freed = 0;
    step(&r); /* job 1 starts */
    static int obj;
    bs_rcu_retire(&obj, count_free);
    bs_rcu_reclaim();
    assert_int_equal(freed, 0);
    step(&r); /* job 1 ends */
    step(&r); /* job 2 starts: it cannot have seen obj */
    bs_rcu_reclaim();
    assert_int_equal(freed, 1);
    step(&r);
    pthread_join(t, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_for_an_online_reader),
        cmocka_unit_test(test_a_new_registration_in_the_same_slot_is_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
